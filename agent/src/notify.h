/* notify: the systemd notify protocol (READY/STOPPING/WATCHDOG/STATUS)
 * spoken directly over $NOTIFY_SOCKET, so the agent needs no libsystemd.
 * Every call is a no-op when not started by systemd. */
#ifndef C8Y_NOTIFY_H
#define C8Y_NOTIFY_H

/* Sends one state string such as "READY=1". Returns 0 (also without
 * NOTIFY_SOCKET), C8Y_EINVAL for an unusable socket path or C8Y_EIO. */
int notify_send(const char *state);
/* Watchdog period in ms ($WATCHDOG_USEC / 2 for this pid), or 0. */
long long notify_watchdog_interval_ms(void);

#endif
