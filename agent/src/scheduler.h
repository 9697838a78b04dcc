/* scheduler: when each registered producer runs. A producer due while its
 * previous cycle is still busy skips that cycle; one that fell behind
 * restarts from now instead of bursting to catch up. Main loop only. */
#ifndef C8Y_SCHEDULER_H
#define C8Y_SCHEDULER_H

#include "registry.h"

/* Queues the due producers on their plugins' workers; returns the next due
 * time (ms, monotonic) or -1 when there are no producers. */
long long scheduler_run(registry *reg, long long now);
/* Every producer due at `now` (start, reload). */
void scheduler_reset(registry *reg, long long now);

#endif
