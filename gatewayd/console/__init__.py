"""`gatewayd console`: a read-only web page of the running gateway, served by a process of its own.

Why a separate process and not the daemon's loop: the daemon polls devices and keeps the outbox, and
nothing a browser does may cost it a poll. A fault in the console (a bug, a hostile request, a month-long
trend query, memory) ends or slows the console only; the daemon sees one more view-role client on its
control socket (`gatewayd.operator.access`), bounded like every other (`limits.control_*`), and the
history is read from the store through a read-only SQLite connection that never blocks its writer. The
daemon's own memory stays what it was (no page, no sessions, no trend buffers in it).

The parts: `source` (the control-socket client and the snapshot it keeps), `trend` (history queries),
`http` (the bounded HTTP server), `auth` (users file, login throttle, sessions), `app` (the paths),
`service` (putting them together), `static/` (the page, its script and style, written for this project;
nothing is loaded from elsewhere, so the page works without a network).
"""
