/* agent_proc: runs the real c8y-agent binary as a child process for
 * integration tests: writes its config, captures its log, stops or kills
 * it. The binary comes from $C8Y_AGENT_BIN (set by ctest). */
#ifndef C8Y_AGENT_PROC_H
#define C8Y_AGENT_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct agent_proc agent_proc;

/* Creates a private dir with agent.ini (mode 600) whose text is `ini`
 * (state_dir and plugin_dir default to subdirectories of it unless the
 * text sets them). Does not start anything. */
agent_proc *agent_proc_new(const char *ini);
const char *agent_proc_dir(agent_proc *a);
const char *agent_proc_config(agent_proc *a);
/* Starts the agent; its stderr goes to <dir>/agent.log. Returns 0/-1. */
int agent_proc_start(agent_proc *a);
int agent_proc_start_args(agent_proc *a, const char *const *extra_args);
/* SIGTERM and wait (SIGKILL after timeout_ms). Returns the exit status
 * (WEXITSTATUS, or 128+signal). */
int agent_proc_stop(agent_proc *a, int timeout_ms);
void agent_proc_kill(agent_proc *a); /* SIGKILL + reap */
int agent_proc_signal(agent_proc *a, int sig);
pid_t agent_proc_pid(agent_proc *a);
/* Waits for the process to exit by itself; exit status or -1 on timeout. */
int agent_proc_wait_exit(agent_proc *a, int timeout_ms);
/* Whole log so far (malloc'ed). */
char *agent_proc_log(agent_proc *a);
/* Waits until the log contains `needle`; true if it did within timeout. */
bool agent_proc_wait_log(agent_proc *a, const char *needle, int timeout_ms);
/* Occurrences of `needle` in the log so far (the log spans restarts). */
int agent_proc_log_count(agent_proc *a, const char *needle);
/* Waits until the log holds `needle` at least n times; true if it did. */
bool agent_proc_wait_log_count(agent_proc *a, const char *needle, int n,
                               int timeout_ms);
/* Stops if running, removes the dir. */
void agent_proc_free(agent_proc *a);

#endif
