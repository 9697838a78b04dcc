/* sockopt: socket options on connections the agent does not create itself.
 *
 * Paho MQTT C (1.3.x) offers no hook to set TCP_NODELAY, and without it a
 * QoS 1 operation costs two Nagle/delayed-ACK round trips (about 40-90 ms)
 * before its handler runs: the PUBACK for s/ds and then the 501 wait for the
 * peer's delayed ACK. After Paho reports the connection up, the agent finds
 * its TCP socket among the process's descriptors by the peer's port and
 * address family and sets the option there; TLS runs over the same socket,
 * so it covers ssl:// too. */
#ifndef C8Y_SOCKOPT_H
#define C8Y_SOCKOPT_H

/* Sets TCP_NODELAY on every connected TCP socket of this process whose
 * peer port is `peer_port`. Returns how many sockets were changed. */
int sockopt_nodelay_to_port(int peer_port);

/* Marks every descriptor above stderr close-on-exec, so processes plugins
 * start do not inherit the MQTT socket or the queue files (Paho opens its
 * sockets without SOCK_CLOEXEC). Returns how many were changed. */
int sockopt_cloexec_all(void);

#endif
