/* Host description: every field from a fake /proc and /sys tree under a
 * temporary directory, an empty tree, cut and malformed lines, the GPU cap,
 * and the real machine against cpuid (cpu.h and __builtin_cpu_supports). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "inferd/cpu.h"
#include "inferd/host.h"

static char g_root[64];

/* Setup: a fresh empty directory for the test's fake root, in *state. */
static int make_root(void **state)
{
    snprintf(g_root, sizeof(g_root), "/tmp/inferd-test-host-XXXXXX");
    if (!mkdtemp(g_root))
        return -1;
    *state = g_root;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Teardown: the fake root and all below it. */
static int remove_root(void **state)
{
    return nftw(*state, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Write root/rel with @p text, creating the directories on the way. */
static void put(const char *root, const char *rel, const char *text)
{
    char path[1024];
    assert_true(snprintf(path, sizeof(path), "%s/%s", root, rel) < (int)sizeof(path));
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        assert_true(mkdir(path, 0700) == 0 || errno == EEXIST);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* A PCI device directory with its class and vendor. */
static void put_pci(const char *root, const char *bus_id, const char *pci_class, const char *vendor)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/class", bus_id);
    put(root, rel, pci_class);
    snprintf(rel, sizeof(rel), "sys/bus/pci/devices/%s/vendor", bus_id);
    put(root, rel, vendor);
}

static const char CPUINFO[] =
    "processor\t: 0\n"
    "vendor_id\t: GenuineIntel\n"
    "model\t\t: 143\n"
    "model name\t: Intel(R) Xeon(R) Platinum 8480+  \n"
    /* Out of order, with near misses that must not count: "avx512" is not
     * "avx512f", "amx_int8x" is not "amx_int8". */
    "flags\t\t: fpu amx_tile avx512 sse4_2 avx2 avx avx512_vnni amx_int8x f16c fma\n"
    "bugs\t\t: spectre_v1\n"
    "\n"
    "processor\t: 1\n"
    "model name\t: a second CPU is not read\n"
    "flags\t\t: avx512f\n"
    "\n"
    "processor\t: 2\n";

static void test_host_fake_tree(void **state)
{
    const char *root = *state;
    put(root, "proc/cpuinfo", CPUINFO);
    put(root, "sys/devices/system/cpu/online", "0-3,6\n");
    put(root, "proc/meminfo",
        "MemTotal:       16384 kB\nMemFree:         1024 kB\nMemAvailable:    8192 kB\n");
    /* Two NVIDIA GPUs of the driver; their PCI entries must not repeat them. */
    put(root, "proc/driver/nvidia/gpus/0000:81:00.0/information",
        "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 30\nBus Location: \t 0000:81:00.0\n");
    put(root, "proc/driver/nvidia/gpus/0000:01:00.0/information",
        "Model: \t\t NVIDIA A100-SXM4-40GB\n");
    put_pci(root, "0000:01:00.0", "0x030200\n", "0x10de\n");
    put_pci(root, "0000:81:00.0", "0x030200\n", "0x10de\n");
    /* An AMD card with amdgpu's attributes, an Intel iGPU with none. */
    put_pci(root, "0000:03:00.0", "0x038000\n", "0x1002\n");
    put(root, "sys/bus/pci/devices/0000:03:00.0/product_name", "AMD Instinct MI210\n");
    put(root, "sys/bus/pci/devices/0000:03:00.0/mem_info_vram_total", "68702699520\n");
    put_pci(root, "0000:00:02.0", "0x030000\n", "0x8086\n");
    /* Not GPUs: an Intel ISA bridge, a BMC's VGA, a virtio device. */
    put_pci(root, "0000:00:1f.0", "0x060100\n", "0x8086\n");
    put_pci(root, "0000:04:00.0", "0x030000\n", "0x1a03\n");
    put_pci(root, "0000:00:03.0", "0x020000\n", "0x1af4\n");

    inferd_host_info h;
    inferd_error err = {0};
    assert_int_equal(inferd_host_read_at(root, &h, &err), 0);
    assert_string_equal(h.cpu_model, "Intel(R) Xeon(R) Platinum 8480+");
    assert_int_equal(h.n_cpus, 5);
    assert_int_equal(h.isa, INFERD_HOST_ISA_SSE4_2 | INFERD_HOST_ISA_AVX | INFERD_HOST_ISA_AVX2 |
                                INFERD_HOST_ISA_FMA | INFERD_HOST_ISA_F16C |
                                INFERD_HOST_ISA_AVX512_VNNI | INFERD_HOST_ISA_AMX_TILE);
    assert_int_equal(h.mem_total_bytes, 16384ull * 1024);
    assert_int_equal(h.mem_available_bytes, 8192ull * 1024);

    static const struct {
        const char *vendor, *model, *bus_id;
        uint64_t memory_bytes;
    } want[] = {
        {"nvidia", "NVIDIA A100-SXM4-40GB", "0000:01:00.0", 0},
        {"nvidia", "NVIDIA H100 80GB HBM3", "0000:81:00.0", 0},
        {"intel", "unknown", "0000:00:02.0", 0},
        {"amd", "AMD Instinct MI210", "0000:03:00.0", 68702699520ull},
    };
    assert_int_equal(h.n_gpus, 4);
    for (uint32_t i = 0; i < h.n_gpus; i++) {
        assert_int_equal(h.gpus[i].index, i);
        assert_string_equal(h.gpus[i].vendor, want[i].vendor);
        assert_string_equal(h.gpus[i].model, want[i].model);
        assert_string_equal(h.gpus[i].bus_id, want[i].bus_id);
        assert_int_equal(h.gpus[i].memory_bytes, want[i].memory_bytes);
    }
}

static void test_host_empty_tree(void **state)
{
    const char *root = *state;
    inferd_host_info h;
    inferd_error err = {0};
    memset(&h, 0xa5, sizeof(h));
    assert_int_equal(inferd_host_read_at(root, &h, &err), 0);
    assert_int_equal(err.code, 0);
    assert_string_equal(h.cpu_model, "unknown");
    assert_int_equal(h.n_cpus, 1);
    assert_int_equal(h.isa, 0);
    assert_int_equal(h.mem_total_bytes, 0);
    assert_int_equal(h.mem_available_bytes, 0);
    assert_int_equal(h.n_gpus, 0);
}

/* Without sysfs the CPU count is the number of "processor" entries; a
 * malformed CPU list falls back the same way. */
static void test_host_cpu_count_fallback(void **state)
{
    const char *root = *state;
    inferd_host_info h;
    put(root, "proc/cpuinfo", CPUINFO);
    assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
    assert_int_equal(h.n_cpus, 3);
    static const char *const bad[] = {"", "3-1", "0-", "-3", "0,,1", "0-3x", "0-99999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        put(root, "sys/devices/system/cpu/online", bad[i]);
        assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
        assert_int_equal(h.n_cpus, 3);
    }
    put(root, "sys/devices/system/cpu/online", "0\n");
    assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
    assert_int_equal(h.n_cpus, 1);
}

/* A line longer than the reader's buffer is cut and its rest skipped, not
 * taken for a line of its own; a value longer than its field is cut to fit
 * on a UTF-8 character boundary. */
static void test_host_long_lines(void **state)
{
    const char *root = *state;
    inferd_host_info h;
    size_t big = 20000;
    char *text = malloc(2 * big + 256);
    assert_non_null(text);

    /* A long "bugs" line whose tail looks like a model name. */
    char *p = text;
    p += sprintf(p, "processor\t: 0\nbugs\t\t:");
    memset(p, 'x', big);
    p += big;
    p += sprintf(p, "\nmodel name\t: Fake CPU\n");
    put(root, "proc/cpuinfo", text);
    assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
    assert_string_equal(h.cpu_model, "Fake CPU");

    /* The names before the cut count; after the skipped rest, the next
     * line is read as usual. */
    p = text;
    p += sprintf(p, "flags\t\t: sse4_2 avx2");
    for (size_t i = 0; i < big / 8; i++)
        p += sprintf(p, " avx512f");
    p += sprintf(p, " fma\nmodel name\t: After\n");
    put(root, "proc/cpuinfo", text);
    assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
    assert_int_equal(h.isa,
                     INFERD_HOST_ISA_SSE4_2 | INFERD_HOST_ISA_AVX2 | INFERD_HOST_ISA_AVX512F);
    assert_string_equal(h.cpu_model, "After");

    /* A model name longer than the field is cut to fit. */
    p = text;
    p += sprintf(p, "model name\t: ");
    memset(p, 'm', 300);
    p[300] = '\n';
    p[301] = '\0';
    put(root, "proc/cpuinfo", text);
    assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
    assert_int_equal(strlen(h.cpu_model), sizeof(h.cpu_model) - 1);

    /* 200 two-byte characters: 127 bytes would end inside one. */
    p = text;
    p += sprintf(p, "model name\t: ");
    for (int i = 0; i < 200; i++)
        p += sprintf(p, "\xc3\xa9");
    sprintf(p, "\n");
    put(root, "proc/cpuinfo", text);
    assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
    assert_int_equal(strlen(h.cpu_model), 126);
    assert_memory_equal(h.cpu_model + 124, "\xc3\xa9", 2);
    free(text);
}

/* A name cut by the line buffer is not taken for a shorter name. */
static void test_host_cut_flag_name(void **state)
{
    const char *root = *state;
    inferd_host_info h;
    /* The cpuinfo reader holds 8191 bytes a line: pad so that the line is cut
     * right after "avx512f" of "avx512f_cut". */
    char text[8300];
    int n = snprintf(text, sizeof(text), "flags\t\t: sse4_2 ");
    memset(text + n, 'y', (size_t)(8191 - n - 8));
    n = 8191 - 8;
    sprintf(text + n, " avx512f_cut\n");
    put(root, "proc/cpuinfo", text);
    assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
    assert_int_equal(h.isa, INFERD_HOST_ISA_SSE4_2);
}

/* More GPUs than fit: the INFERD_HOST_GPUS_MAX smallest bus ids, in order. */
static void test_host_gpu_cap(void **state)
{
    const char *root = *state;
    char rel[256];
    inferd_host_info h;
    /* Created from the largest down, so readdir order is not sorted order. */
    for (int i = INFERD_HOST_GPUS_MAX + 4 - 1; i >= 0; i--) {
        snprintf(rel, sizeof(rel), "proc/driver/nvidia/gpus/0000:%02x:00.0/information", i + 1);
        put(root, rel, "Model: GPU\n");
    }
    put_pci(root, "0000:00:02.0", "0x030000\n", "0x8086\n");
    assert_int_equal(inferd_host_read_at(root, &h, NULL), 0);
    assert_int_equal(h.n_gpus, INFERD_HOST_GPUS_MAX);
    for (uint32_t i = 0; i < h.n_gpus; i++) {
        char want[32];
        snprintf(want, sizeof(want), "0000:%02x:00.0", i + 1);
        assert_string_equal(h.gpus[i].bus_id, want);
        assert_int_equal(h.gpus[i].index, i);
    }
}

static void test_host_isa_names(void **state)
{
    (void)state;
    static const char *const want[] = {
        "sse4_2",   "avx",      "avx2",        "fma",      "f16c",        "avx512f",  "avx512bw",
        "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8"};
    assert_int_equal(sizeof(want) / sizeof(want[0]), INFERD_HOST_ISA_COUNT);
    for (unsigned i = 0; i < INFERD_HOST_ISA_COUNT; i++)
        assert_string_equal(inferd_host_isa_name(i), want[i]);
    assert_null(inferd_host_isa_name(INFERD_HOST_ISA_COUNT));
    assert_null(inferd_host_isa_name(~0u));
    assert_int_equal(INFERD_HOST_ISA_AMX_INT8, 1u << (INFERD_HOST_ISA_COUNT - 1));
}

static void test_host_root_too_long(void **state)
{
    (void)state;
    char root[4096];
    inferd_host_info h;
    inferd_error err = {0};
    memset(root, 'r', sizeof(root) - 1);
    root[sizeof(root) - 1] = '\0';
    memset(&h, 0xa5, sizeof(h));
    assert_int_equal(inferd_host_read_at(root, &h, &err), INFERD_E_INVALID);
    assert_int_equal(err.code, INFERD_E_INVALID);
    assert_non_null(strstr(err.msg, "root"));
    assert_int_equal(h.n_cpus, 0xa5a5a5a5u); /* untouched */
}

/* The real machine: plausible figures, and the ISA bits agree with cpuid. */
static void test_host_real_machine(void **state)
{
    (void)state;
    inferd_host_info h, h2;
    inferd_error err = {0};
    assert_int_equal(inferd_host_read_at("", &h, &err), 0);
    assert_int_equal(inferd_host_read(&h2, &err), 0);
    assert_true(h.n_cpus >= 1);
    assert_int_equal(h2.n_cpus, h.n_cpus);
    assert_true(h.mem_total_bytes > 0);
    assert_true(h.mem_available_bytes <= h.mem_total_bytes);
    assert_true(h.cpu_model[0] != '\0');
    assert_true(h.n_gpus <= INFERD_HOST_GPUS_MAX);
    for (uint32_t i = 0; i < h.n_gpus; i++) {
        assert_int_equal(h.gpus[i].index, i);
        assert_true(h.gpus[i].bus_id[0] != '\0');
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    assert_int_equal(!!(h.isa & INFERD_HOST_ISA_AVX2), !!__builtin_cpu_supports("avx2"));
    assert_int_equal(!!(h.isa & INFERD_HOST_ISA_AVX512F), !!__builtin_cpu_supports("avx512f"));
    /* What the kernels run never needs more than the host reports. */
    inferd_isa isa = inferd_cpu_isa_hw();
    const uint32_t avx2_set = INFERD_HOST_ISA_AVX2 | INFERD_HOST_ISA_FMA | INFERD_HOST_ISA_F16C;
    const uint32_t avx512_set = avx2_set | INFERD_HOST_ISA_AVX512F | INFERD_HOST_ISA_AVX512BW |
                                INFERD_HOST_ISA_AVX512VL | INFERD_HOST_ISA_AVX512DQ |
                                INFERD_HOST_ISA_AVX512_VNNI;
    if (isa >= INFERD_ISA_AVX2)
        assert_int_equal(h.isa & avx2_set, avx2_set);
    if (isa >= INFERD_ISA_AVX512)
        assert_int_equal(h.isa & avx512_set, avx512_set);
    if ((h.isa & avx512_set) == avx512_set)
        assert_int_equal(isa, INFERD_ISA_AVX512);
    else if ((h.isa & avx2_set) == avx2_set)
        assert_int_equal(isa, INFERD_ISA_AVX2);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_host_fake_tree, make_root, remove_root),
        cmocka_unit_test_setup_teardown(test_host_empty_tree, make_root, remove_root),
        cmocka_unit_test_setup_teardown(test_host_cpu_count_fallback, make_root, remove_root),
        cmocka_unit_test_setup_teardown(test_host_long_lines, make_root, remove_root),
        cmocka_unit_test_setup_teardown(test_host_cut_flag_name, make_root, remove_root),
        cmocka_unit_test_setup_teardown(test_host_gpu_cap, make_root, remove_root),
        cmocka_unit_test(test_host_isa_names),
        cmocka_unit_test(test_host_root_too_long),
        cmocka_unit_test(test_host_real_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
