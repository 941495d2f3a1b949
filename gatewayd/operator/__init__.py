"""What a person at the gateway uses: the control socket and the operating commands behind it."""
