/* clock: the two time bases every module uses. Monotonic for deadlines and
 * intervals (never jumps with NTP), wall clock for timestamps the platform
 * sees. */
#ifndef C8Y_CLOCK_H
#define C8Y_CLOCK_H

/* Milliseconds on CLOCK_MONOTONIC. */
long long clock_mono_ms(void);
/* Milliseconds since the epoch (CLOCK_REALTIME). */
long long clock_wall_ms(void);

#endif
