/* status: text for the SDK's C8Y_* status codes. */
#ifndef C8Y_STATUS_H
#define C8Y_STATUS_H

const char *status_str(int status);

#endif
