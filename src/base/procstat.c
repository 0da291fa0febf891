/* Process figures from getrusage and /proc/self. */
#include "inferd/procstat.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

/* The process start time: boot time (btime in /proc/stat) plus field 22 of
 * /proc/self/stat (clock ticks after boot). Also reads threads, vsize and
 * rss from the same line. */
static int read_stat(inferd_procstat *out, inferd_error *err)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return inferd_fail(err, INFERD_E_IO, "cannot open /proc/self/stat");
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and ')': fields start after the last ')'. */
    const char *p = strrchr(buf, ')');
    unsigned long long start_ticks = 0, vsize = 0;
    long long rss_pages = 0, threads = 0;
    /* Fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime stime cutime cstime priority nice num_threads itrealvalue
     * starttime vsize rss */
    if (!p || sscanf(p + 1,
                     " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d"
                     " %lld %*d %llu %llu %lld",
                     &threads, &start_ticks, &vsize, &rss_pages) != 4)
        return inferd_fail(err, INFERD_E_IO, "cannot parse /proc/self/stat");
    out->n_threads = (uint32_t)threads;
    out->vm_bytes = vsize;
    long page = sysconf(_SC_PAGESIZE);
    out->rss_bytes = (uint64_t)rss_pages * (uint64_t)(page > 0 ? page : 4096);

    f = fopen("/proc/stat", "r");
    if (!f)
        return inferd_fail(err, INFERD_E_IO, "cannot open /proc/stat");
    unsigned long long btime = 0;
    char line[256];
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "btime %llu", &btime) == 1)
            break;
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    if (btime == 0 || hz <= 0)
        return inferd_fail(err, INFERD_E_IO, "cannot read the boot time from /proc/stat");
    out->start_time_s = (double)btime + (double)start_ticks / (double)hz;
    return 0;
}

static uint32_t count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    uint32_t n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n > 0 ? n - 1 : 0; /* the directory's own descriptor */
}

int inferd_procstat_read(inferd_procstat *out, inferd_error *err)
{
    memset(out, 0, sizeof(*out));
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        out->cpu_user_s = tv_s(ru.ru_utime);
        out->cpu_system_s = tv_s(ru.ru_stime);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        out->max_fds = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    out->n_open_fds = count_fds();
    return read_stat(out, err);
}

double inferd_procstat_cpu_percent(const inferd_procstat *before, const inferd_procstat *after,
                                   double wall_s)
{
    if (wall_s <= 0)
        return 0.0;
    double cpu =
        (after->cpu_user_s + after->cpu_system_s) - (before->cpu_user_s + before->cpu_system_s);
    return cpu > 0 ? 100.0 * cpu / wall_s : 0.0;
}
