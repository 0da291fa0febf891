/* Host description from /proc and /sys (see host.h). Every file is optional:
 * what cannot be read stays "unknown" / 0. Lines go into fixed stack
 * buffers; a longer line is cut and its rest skipped, never read as a line
 * of its own. No allocation, no shared state: any thread. */
#include "inferd/host.h"

#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ROOT_MAX 2047                 /* bytes of a root prefix, see host.h */
#define PATH_CAP (ROOT_MAX + 1 + 512) /* root + the longest path below it */
#define CPUINFO_LINE_CAP 8192         /* a "flags" line is ~1.7 KB today */
#define LINE_CAP 512                  /* every other file */

static const char *const isa_names[INFERD_HOST_ISA_COUNT] = {
    "sse4_2",   "avx",      "avx2",        "fma",      "f16c",        "avx512f",  "avx512bw",
    "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
};

const char *inferd_host_isa_name(unsigned bit_index)
{
    return bit_index < INFERD_HOST_ISA_COUNT ? isa_names[bit_index] : NULL;
}

/* ---- reading files ---- */

/* Copy @p src into dst[cap], cut to fit; a cut never splits a UTF-8
 * character, so the text stays valid for JSON. */
static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    while (n > 0 && src[n] != '\0' && ((unsigned char)src[n] & 0xC0) == 0x80)
        n--;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Drop trailing blanks from s[0..n); the new length. */
static size_t trim_end(char *s, size_t n)
{
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return n;
}

/* Open root + the formatted path for reading; NULL when the path does not
 * fit or the file cannot be opened. */
static FILE *open_at(const char *root, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static FILE *open_at(const char *root, const char *fmt, ...)
{
    char path[PATH_CAP];
    int n = snprintf(path, sizeof(path), "%s", root);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(path + n, sizeof(path) - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)m >= sizeof(path) - (size_t)n)
        return NULL;
    return fopen(path, "re");
}

/* Open directory root + @p rel; NULL when it does not fit or cannot be
 * opened. */
static DIR *opendir_at(const char *root, const char *rel)
{
    char path[PATH_CAP];
    if (snprintf(path, sizeof(path), "%s%s", root, rel) >= (int)sizeof(path))
        return NULL;
    return opendir(path);
}

/* The next line of @p f without its newline; false at the end. A line longer
 * than the buffer is cut (*out_cut set) and the rest of it skipped. */
static bool read_line(FILE *f, char *buf, size_t cap, bool *out_cut)
{
    *out_cut = false;
    if (!fgets(buf, (int)cap, f))
        return false;
    size_t n = strlen(buf);
    if (n > 0 && buf[n - 1] == '\n') {
        buf[n - 1] = '\0';
    } else if (n + 1 == cap) {
        int c = getc(f);
        if (c != '\n' && c != EOF) {
            *out_cut = true;
            while ((c = getc(f)) != EOF && c != '\n')
                ;
        }
    }
    return true;
}

/* The first line of a small file (a sysfs attribute), trailing blanks
 * trimmed; false when it cannot be read or is empty. */
static bool read_first_line(FILE *f, char *buf, size_t cap)
{
    bool cut;
    if (!f)
        return false;
    bool ok = read_line(f, buf, cap, &cut);
    fclose(f);
    if (!ok)
        return false;
    return trim_end(buf, strlen(buf)) > 0;
}

/* When @p line is "<key><blanks>:<blanks><value>" with a non-empty value,
 * the value with trailing blanks trimmed (in place); else NULL. An exact key:
 * "model" does not match a "model name" line. */
static char *value_of(char *line, const char *key)
{
    size_t n = strlen(key);
    if (strncmp(line, key, n) != 0)
        return NULL;
    char *p = line + n;
    p += strspn(p, " \t");
    if (*p != ':')
        return NULL;
    p++;
    p += strspn(p, " \t");
    return trim_end(p, strlen(p)) > 0 ? p : NULL;
}

/* ---- CPU and memory ---- */

/* The ISA bits of a cpuinfo "flags" value. When the line was cut, its last
 * name may be cut too ("avx512" of "avx512_bf16"), so it is not counted. */
static uint32_t isa_bits(const char *flags, bool cut)
{
    uint32_t bits = 0;
    for (const char *p = flags;;) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, " \t");
        if (n == 0 || (cut && p[n] == '\0'))
            break;
        for (unsigned i = 0; i < INFERD_HOST_ISA_COUNT; i++)
            if (strlen(isa_names[i]) == n && memcmp(p, isa_names[i], n) == 0)
                bits |= 1u << i;
        p += n;
    }
    return bits;
}

/* Model name and flags of the first CPU; the number of "processor" entries
 * into *out_n_processors (the CPU count when sysfs has none). */
static void read_cpuinfo(const char *root, inferd_host_info *out, uint32_t *out_n_processors)
{
    char line[CPUINFO_LINE_CAP];
    bool cut, have_model = false, have_flags = false;
    uint32_t n_processors = 0;
    FILE *f = open_at(root, "/proc/cpuinfo");

    *out_n_processors = 0;
    if (!f)
        return;
    while (read_line(f, line, sizeof(line), &cut)) {
        char *v;
        if (value_of(line, "processor")) {
            n_processors++;
        } else if (!have_model && (v = value_of(line, "model name"))) {
            copy_text(out->cpu_model, sizeof(out->cpu_model), v);
            have_model = true;
        } else if (!have_flags && (v = value_of(line, "flags"))) {
            out->isa = isa_bits(v, cut);
            have_flags = true;
        }
    }
    fclose(f);
    *out_n_processors = n_processors;
}

/* The number of CPUs in a sysfs CPU list such as "0-3,8-11"; 0 when it is
 * malformed. */
static uint32_t count_cpu_list(const char *s)
{
    uint64_t n = 0;
    const char *p = s;

    while (*p) {
        char *end;
        if (!isdigit((unsigned char)*p))
            return 0;
        unsigned long first = strtoul(p, &end, 10), last = first;
        p = end;
        if (*p == '-') {
            p++;
            if (!isdigit((unsigned char)*p))
                return 0;
            last = strtoul(p, &end, 10);
            p = end;
        }
        /* Linux numbers at most a few thousand CPUs; a larger figure is
         * nonsense, and the bound keeps the sum from overflowing. */
        if (last < first || last >= (1ul << 20))
            return 0;
        n += last - first + 1;
        if (*p == ',')
            p++;
        else if (*p != '\0')
            return 0;
    }
    return n > UINT32_MAX ? 0 : (uint32_t)n;
}

static uint32_t read_online_cpus(const char *root)
{
    char line[LINE_CAP];
    if (!read_first_line(open_at(root, "/sys/devices/system/cpu/online"), line, sizeof(line)))
        return 0;
    return count_cpu_list(line);
}

/* A /proc/meminfo figure ("16384 kB") in bytes; 0 when malformed. */
static uint64_t kib_bytes(const char *v)
{
    char *end;
    if (!isdigit((unsigned char)*v))
        return 0;
    unsigned long long kib = strtoull(v, &end, 10);
    if (strcmp(end, " kB") != 0 || kib > UINT64_MAX / 1024)
        return 0;
    return (uint64_t)kib * 1024;
}

static void read_meminfo(const char *root, inferd_host_info *out)
{
    char line[LINE_CAP];
    bool cut;
    FILE *f = open_at(root, "/proc/meminfo");
    if (!f)
        return;
    while (read_line(f, line, sizeof(line), &cut)) {
        char *v;
        if ((v = value_of(line, "MemTotal")))
            out->mem_total_bytes = kib_bytes(v);
        else if ((v = value_of(line, "MemAvailable")))
            out->mem_available_bytes = kib_bytes(v);
    }
    fclose(f);
}

/* ---- GPUs ---- */

#define BUS_ID_CAP sizeof(((inferd_host_gpu *)0)->bus_id)

/* Up to INFERD_HOST_GPUS_MAX GPUs by bus id, ascending: when full, the
 * largest is dropped, so the result does not depend on readdir's order. */
typedef struct bus_list {
    uint32_t n;
    struct {
        char id[BUS_ID_CAP];
        const char *vendor; /* static string */
    } gpu[INFERD_HOST_GPUS_MAX];
} bus_list;

static void bus_list_add(bus_list *l, const char *id, const char *vendor)
{
    size_t len = strlen(id);
    if (len == 0 || len >= BUS_ID_CAP)
        return; /* not a PCI address */
    uint32_t i = l->n;
    while (i > 0 && strcmp(l->gpu[i - 1].id, id) > 0)
        i--;
    if (i == INFERD_HOST_GPUS_MAX)
        return;
    uint32_t kept = l->n < INFERD_HOST_GPUS_MAX ? l->n : INFERD_HOST_GPUS_MAX - 1;
    memmove(&l->gpu[i + 1], &l->gpu[i], (kept - i) * sizeof(l->gpu[0]));
    memcpy(l->gpu[i].id, id, len + 1);
    l->gpu[i].vendor = vendor;
    if (l->n < INFERD_HOST_GPUS_MAX)
        l->n++;
}

/* The next free entry of out->gpus with its index, vendor and bus id set,
 * model "unknown"; NULL when the list is full. */
static inferd_host_gpu *add_gpu(inferd_host_info *out, const char *vendor, const char *bus_id)
{
    if (out->n_gpus >= INFERD_HOST_GPUS_MAX)
        return NULL;
    inferd_host_gpu *g = &out->gpus[out->n_gpus];
    memset(g, 0, sizeof(*g));
    g->index = out->n_gpus++;
    copy_text(g->vendor, sizeof(g->vendor), vendor);
    copy_text(g->model, sizeof(g->model), "unknown");
    copy_text(g->bus_id, sizeof(g->bus_id), bus_id);
    return g;
}

static bool listed(const inferd_host_info *out, const char *bus_id)
{
    for (uint32_t i = 0; i < out->n_gpus; i++)
        if (strcasecmp(out->gpus[i].bus_id, bus_id) == 0)
            return true;
    return false;
}

/* GPUs of the NVIDIA driver: one directory per GPU, named by its bus id. */
static void read_nvidia_gpus(const char *root, inferd_host_info *out)
{
    char line[LINE_CAP];
    bus_list ids = {0};
    bool cut;

    DIR *d = opendir_at(root, "/proc/driver/nvidia/gpus");
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            bus_list_add(&ids, e->d_name, "nvidia");
    closedir(d);

    for (uint32_t i = 0; i < ids.n; i++) {
        inferd_host_gpu *g = add_gpu(out, ids.gpu[i].vendor, ids.gpu[i].id);
        if (!g)
            return;
        FILE *f = open_at(root, "/proc/driver/nvidia/gpus/%s/information", g->bus_id);
        while (f && read_line(f, line, sizeof(line), &cut)) {
            char *v = value_of(line, "Model");
            if (v) {
                copy_text(g->model, sizeof(g->model), v);
                break;
            }
        }
        if (f)
            fclose(f);
    }
}

/* "nvidia", "amd" or "intel" for a GPU maker's PCI vendor id, else NULL. */
static const char *gpu_vendor(unsigned long vendor_id)
{
    switch (vendor_id) {
    case 0x10de: return "nvidia";
    case 0x1002: return "amd";
    case 0x8086: return "intel";
    default: return NULL;
    }
}

/* The vendor of PCI device @p name when it is a display controller (class
 * 0x03xxxx) made by a GPU maker; else NULL. */
static const char *pci_gpu_vendor(const char *root, const char *name)
{
    char line[LINE_CAP], *end;

    if (!read_first_line(open_at(root, "/sys/bus/pci/devices/%s/class", name), line, sizeof(line)))
        return NULL;
    unsigned long pci_class = strtoul(line, &end, 16);
    if (end == line || (pci_class >> 16) != 0x03)
        return NULL;
    if (!read_first_line(open_at(root, "/sys/bus/pci/devices/%s/vendor", name), line, sizeof(line)))
        return NULL;
    unsigned long vendor_id = strtoul(line, &end, 16);
    return end == line ? NULL : gpu_vendor(vendor_id);
}

/* A decimal byte count in a sysfs attribute; 0 when missing or malformed. */
static uint64_t read_bytes(FILE *f)
{
    char line[LINE_CAP], *end;
    if (!read_first_line(f, line, sizeof(line)) || !isdigit((unsigned char)line[0]))
        return 0;
    unsigned long long bytes = strtoull(line, &end, 10);
    return *end == '\0' ? (uint64_t)bytes : 0;
}

/* Display-class PCI devices of GPU makers the NVIDIA driver did not list.
 * amdgpu puts product_name and mem_info_vram_total on the PCI device itself
 * (/sys/class/drm/cardN/device is a link to it); other drivers have
 * neither, and their GPUs stay "unknown" / 0. */
static void read_pci_gpus(const char *root, inferd_host_info *out)
{
    char line[LINE_CAP];
    bus_list ids = {0};

    DIR *d = opendir_at(root, "/sys/bus/pci/devices");
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        const char *vendor;
        if (e->d_name[0] != '.' && strlen(e->d_name) < BUS_ID_CAP && !listed(out, e->d_name) &&
            (vendor = pci_gpu_vendor(root, e->d_name)))
            bus_list_add(&ids, e->d_name, vendor);
    }
    closedir(d);

    for (uint32_t i = 0; i < ids.n; i++) {
        inferd_host_gpu *g = add_gpu(out, ids.gpu[i].vendor, ids.gpu[i].id);
        if (!g)
            return;
        if (read_first_line(open_at(root, "/sys/bus/pci/devices/%s/product_name", g->bus_id), line,
                            sizeof(line)))
            copy_text(g->model, sizeof(g->model), line);
        g->memory_bytes =
            read_bytes(open_at(root, "/sys/bus/pci/devices/%s/mem_info_vram_total", g->bus_id));
    }
}

/* ---- entry points ---- */

int inferd_host_read_at(const char *root, inferd_host_info *out, inferd_error *err)
{
    uint32_t n_processors;

    assert(out);
    if (!root)
        root = "";
    if (strnlen(root, ROOT_MAX + 1) > ROOT_MAX)
        return inferd_fail(err, INFERD_E_INVALID, "host root: longer than %d bytes", ROOT_MAX);
    memset(out, 0, sizeof(*out));
    copy_text(out->cpu_model, sizeof(out->cpu_model), "unknown");
    read_cpuinfo(root, out, &n_processors);
    out->n_cpus = read_online_cpus(root);
    if (out->n_cpus == 0)
        out->n_cpus = n_processors > 0 ? n_processors : 1;
    read_meminfo(root, out);
    read_nvidia_gpus(root, out);
    read_pci_gpus(root, out);
    return 0;
}

int inferd_host_read(inferd_host_info *out, inferd_error *err)
{
    return inferd_host_read_at("", out, err);
}
