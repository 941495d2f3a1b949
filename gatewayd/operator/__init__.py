"""What a person at the gateway uses: the control socket (`control`) and who may do what on it
(`access`), the daemon's operating commands (`operate`: status, tail, reload), the live fan-out behind
`tail` (`tail`), the figures behind `status` (`status`), and the pure text renderers the CLI prints
with (`render`)."""
