#include "status.h"

#include <c8y/plugin.h>

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
    return "line exceeds the 16000-byte payload limit";
  default:
    return "unknown status";
  }
}
