/* Process figures for /metrics, /v1/status and heartbeats: CPU time,
 * resident memory, threads, open descriptors, start time. Read from
 * getrusage and /proc/self (Linux). */
#ifndef INFERD_PROCSTAT_H
#define INFERD_PROCSTAT_H

#include <stdint.h>

#include "inferd/error.h"

typedef struct inferd_procstat {
    double cpu_user_s, cpu_system_s; /* CPU time used so far, all threads */
    uint64_t rss_bytes;              /* resident set now */
    uint64_t vm_bytes;               /* virtual size now */
    uint32_t n_threads;
    uint32_t n_open_fds;
    uint64_t max_fds;    /* RLIMIT_NOFILE soft limit */
    double start_time_s; /* Unix time the process started */
} inferd_procstat;

/**
 * Read the figures of the calling process.
 * @return 0; INFERD_E_IO when /proc/self cannot be read (the message names
 * the file); fields that could be read are filled either way.
 * Thread: any.
 */
int inferd_procstat_read(inferd_procstat *out, inferd_error *err);

/** CPU utilisation between two readings @p wall_s seconds apart, in percent
 * of one CPU (200 means two CPUs fully busy, as top prints it); 0 when
 * wall_s <= 0. */
double inferd_procstat_cpu_percent(const inferd_procstat *before, const inferd_procstat *after,
                                   double wall_s);

#endif
