/* The control protocol's packets (docs/pipeline.md): one JSON object per
 * SOCK_SEQPACKET packet, descriptors attached with SCM_RIGHTS. Internal to
 * src/pipeline. */
#ifndef INFERD_PIPELINE_CTL_H
#define INFERD_PIPELINE_CTL_H

#include <jansson.h>
#include <stddef.h>

#include "inferd/error.h"

#define CTL_PACKET_MAX 65536
#define CTL_FDS_MAX 64

/** Send @p msg (not taken) with @p n_fds descriptors. @return 0;
 * INFERD_E_IO (the peer is gone), INFERD_E_TOO_LARGE. */
int inferd__ctl_send(int sock, json_t *msg, const int *fds, size_t n_fds, inferd_error *err);

/** Send {"type": @p type}. */
int inferd__ctl_send_type(int sock, const char *type, inferd_error *err);

/** Receive one packet: *out (a JSON object, decref it) and up to
 * CTL_FDS_MAX descriptors into @p fds (*n_fds; close-on-exec). @return 0;
 * INFERD_E_UNAVAILABLE (the peer closed), INFERD_E_FORMAT (not a JSON
 * object with a "type" string), INFERD_E_IO. */
int inferd__ctl_recv(int sock, json_t **out, int *fds, size_t *n_fds, inferd_error *err);

#endif
