"""What every driver fed by pushed messages shares (MQTT, WebSocket), knowing no transport:

- `inbox`: the bounded queue between receiving and decoding, what it drops, and the `gap` event
  that reports the drops upstream;
- `intake`: where a decoded reading goes (value, quality, source time, arrival time), out-of-order
  source times, DECODE_ERROR per tag, silence, and the figures (`InboundStats`);
- `writes`: the readings of one drain gathered into few sink calls.
"""
