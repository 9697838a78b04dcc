/* status: text for the SDK's C8Y_* status codes, and the one-line error
 * text a failing call writes next to its code. */
#ifndef C8Y_STATUS_H
#define C8Y_STATUS_H

#include <stddef.h>

const char *status_str(int status);

/* snprintf into a caller's error buffer (err, errlen), as the functions
 * that return a C8Y_* code with "one line in err" fill it. */
void status_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* status_seterr, then returns `code`: return status_error(C8Y_EINVAL, ...). */
int status_error(int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
