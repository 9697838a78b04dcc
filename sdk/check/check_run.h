/* check_run: one run of c8y-plugin-check's child process. It is the agent
 * (capture.h: the real loader, plugin host, engine and journal, with a
 * capture transport) and the platform at once: it loads the plugin, runs
 * its producers, sends its message handlers records and every operation it
 * registered (check_gen.h), and watches the lifecycle through a c8y_api
 * table whose slots observe each call before the agent's own runs it.
 *
 * It reports to the parent on report_fd, one record per line, fields
 * separated by tabs (tabs, newlines and backslashes in a field escaped as
 * \t, \n, \\):
 *   plugin <name> <version>     loaded
 *   step <n> <kind> <label>     about to run step n, a producer cycle,
 *                               message or operation (a crash names it)
 *   finding <check> <subject> <detail>
 *   suspect <check> <subject> <detail>   a finding unless something after
 *                               settles it; reported if the process dies
 *   note <text>                 a skipped check, a slow operation ...
 *   fatal <text>                could not run (the parent exits 2)
 *   abandoned                   a worker did not stop: leaks not checked
 *   done <steps> <next>         finished; next < steps when a stuck
 *                               worker stopped it at step next - 1
 * The steps are numbered the same way in every run of one plugin, so a
 * parent whose child crashed in step n (or stopped at n with a stuck
 * worker) starts the next child at n + 1. */
#ifndef C8Y_CHECK_RUN_H
#define C8Y_CHECK_RUN_H

#include <stdbool.h>
#include <stddef.h>

typedef struct check_options {
  const char *plugin;   /* the .so */
  const char *config;   /* an agent.ini with its [plugin.<name>], or NULL */
  const char *work_dir; /* private: the state dir and config go below it */
  int run;              /* this child's number (its own state dir) */
  int wait_ms;          /* real time an operation gets before its timeout */
  int cycles;           /* producer cycles */
  size_t from;          /* first step to run */
  int report_fd;
} check_options;

/* The child's exit status: 0 when it ran (findings or not), 2 when it
 * could not run (a fatal record says why). */
int check_run(const check_options *o);

/* The checks, for --help: name and what fails it. */
typedef struct check_info {
  const char *name;
  const char *what;
} check_info;
extern const check_info check_infos[];
extern const size_t check_ninfos;

#endif
