#include "scheduler.h"

#include "log.h"
#include "plugin_host.h"

#include <stdatomic.h>

long long scheduler_run(registry *reg, long long now) {
  long long next = -1;
  for (size_t i = 0; i < registry_producer_count(reg); i++) {
    reg_producer *p = registry_producer_at(reg, i);
    if (p->next_due_ms <= now) {
      if (atomic_load(&p->busy))
        log_debug("producer %s still busy; skipping a cycle", p->name);
      else
        plugin_host_queue_produce(p->plugin, p);
      p->next_due_ms += p->interval_ms;
      if (p->next_due_ms <= now) /* fell behind: don't burst to catch up */
        p->next_due_ms = now + p->interval_ms;
    }
    if (next < 0 || p->next_due_ms < next)
      next = p->next_due_ms;
  }
  return next;
}

void scheduler_reset(registry *reg, long long now) {
  for (size_t i = 0; i < registry_producer_count(reg); i++)
    registry_producer_at(reg, i)->next_due_ms = now;
}
