"""The ground floor: the vocabulary every room speaks, importing none of them.

`core.types` holds quality codes, events and the sample sink a driver writes into; `core.schema` the
declarative config toolkit (fields, readers, durations, file:line:key errors); `core.yamlload` the YAML
loader that remembers lines; `core.batchformat` the uplink's wire format, shared by the daemon and every
receiver; `core.waits` timed waits that never lose a cancellation. drivers/, rules/, store/ and gatewayd/
all build on these; nothing here imports any of them, so a driver's schema or a rule kernel loads without
the daemon.
"""
