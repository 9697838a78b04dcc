#include "status.h"

#include <c8y/plugin.h>
#include <stdarg.h>
#include <stdio.h>

void status_seterr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

int status_error(int code, char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

/* So the text cannot drift from the limit it names. */
#define STATUS_STR_(x) #x
#define STATUS_STR(x) STATUS_STR_(x)

const char *status_str(int status) {
  switch (status) {
  case C8Y_OK:
    return "ok";
  case C8Y_PENDING:
    return "pending";
  case C8Y_EINVAL:
    return "invalid argument or configuration value";
  case C8Y_ENOMEM:
    return "out of memory";
  case C8Y_ENOTSUP:
    return "not supported by this agent";
  case C8Y_EEXIST:
    return "already registered";
  case C8Y_ESTATE:
    return "called at the wrong time";
  case C8Y_EAGAIN:
    return "agent queue full, data dropped";
  case C8Y_EIO:
    return "I/O failure";
  case C8Y_ETIMEDOUT:
    return "operation timed out";
  case C8Y_ETOOBIG:
    return "line exceeds the " STATUS_STR(C8Y_MAX_LINE) "-byte payload limit";
  case C8Y_EHTTP:
    return "the HTTP server answered with an error";
  case C8Y_EAUTH:
    return "the platform refused the device's credentials";
  case C8Y_ENET:
    return "network failure (DNS, connect, TLS or a cut transfer)";
  case C8Y_ECHECKSUM:
    return "the downloaded file does not match its sha256";
  case C8Y_ECANCELED:
    return "stopped because the operation was cancelled";
  case C8Y_ERATE:
    return "over the plugin's line rate limit: not queued";
  default:
    return "unknown status";
  }
}
