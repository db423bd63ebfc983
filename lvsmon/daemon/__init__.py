"""The running process: the daemon and its ordered parts (daemon.py, lifecycle.py), the runner
that owns fork, pid lock, fd limit, logging set-up and the event loop (runner.py), the pid file,
sd_notify and systemd, the connection sync daemons."""
