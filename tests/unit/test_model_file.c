/* A loaded model whose GGUF file changes on disk, through the registry and
 * the scheduler, on a temp copy of stories260K: truncated while held
 * (requests end with the file's INFERD_E_IO error, no token emitted, gets
 * refused until the instance is released and unloaded, a reload of the
 * empty file fails with the load's error, and the restored file serves the
 * same tokens as before); overwritten in place by another model; a new file
 * renamed over it (the old instance serves while held, the new file once
 * idle, a file that does not load is not swapped in); and no_mmap, where a
 * truncation does not reach the loaded weights. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inferd/model.h"
#include "inferd/registry.h"
#include "inferd/scheduler.h"

#define N_GEN 8
#define PROMPT "Once upon a time"

typedef struct outcome {
    int32_t ids[N_GEN];
    size_t n_ids;      /* TOKEN events before the terminal one */
    int code;          /* 0: DONE, else the ERROR's code */
    char message[256]; /* the ERROR's message */
} outcome;

static char tmp_dir[256];
static char live[300]; /* the model path the registry serves */

static void fixture(char *buf, size_t cap, const char *file)
{
    snprintf(buf, cap, "%s/models/%s", INFERD_FIXTURES, file);
}

/* Write @p src's first @p max_len bytes (< 0: all) into @p dst in place:
 * the same inode when dst exists (O_TRUNC, as cp does). */
static void copy_file(const char *dst, const char *src, long max_len)
{
    FILE *in = fopen(src, "rb");
    assert_non_null(in);
    int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    char buf[65536];
    long total = 0;
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
        if (max_len >= 0 && total + (long)n > max_len)
            n = (size_t)(max_len - total);
        assert_int_equal(write(fd, buf, n), (ssize_t)n);
        total += (long)n;
        if (max_len >= 0 && total >= max_len)
            break;
    }
    fclose(in);
    close(fd);
}

static void copy_fixture(const char *dst, const char *file, long max_len)
{
    char src[512];
    fixture(src, sizeof(src), file);
    copy_file(dst, src, max_len);
}

/* An atomic deploy: write @p file next to the live path, rename it over. */
static void rename_fixture_over(const char *file, long max_len)
{
    char next[320];
    snprintf(next, sizeof(next), "%s/next.gguf", tmp_dir);
    copy_fixture(next, file, max_len);
    assert_int_equal(rename(next, live), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/inferd-model-file-XXXXXX");
    if (!mkdtemp(tmp_dir))
        return -1;
    snprintf(live, sizeof(live), "%s/model.gguf", tmp_dir);
    copy_fixture(live, "stories260K.gguf", -1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char next[320];
    snprintf(next, sizeof(next), "%s/next.gguf", tmp_dir);
    unlink(live);
    unlink(next);
    rmdir(tmp_dir);
    return 0;
}

static inferd_registry_model_opts opts_for(const char *path, bool no_mmap)
{
    inferd_registry_model_opts o = inferd_registry_model_opts_default();
    o.path = path;
    o.keep_alive_ms = -1;
    o.sched.model.n_ctx = 64;
    o.sched.model.no_mmap = no_mmap;
    o.sched.n_slots = 2;
    o.sched.n_threads = 1;
    return o;
}

static inferd_registry *make_registry(void)
{
    inferd_registry *r = NULL;
    inferd_error err = {0};
    assert_int_equal(inferd_registry_create(NULL, &r, &err), 0);
    return r;
}

static int get(inferd_registry *r, const char *id, const char *path, bool no_mmap,
               inferd_registry_handle **out_h, inferd_error *err)
{
    inferd_registry_model_opts o = opts_for(path, no_mmap);
    return inferd_registry_get_or_load(r, id, &o, out_h, err);
}

static inferd_registry_handle *get_ok(inferd_registry *r, const char *path, bool no_mmap)
{
    inferd_registry_handle *h = NULL;
    inferd_error err = {0};
    if (get(r, "m", path, no_mmap, &h, &err) != 0)
        fail_msg("get: %s", err.msg);
    return h;
}

/* Submit a greedy request to @p h and read it to its end. @return the
 * submit's error, or 0 and *out. */
static int run(inferd_registry_handle *h, outcome *out, inferd_error *err)
{
    memset(out, 0, sizeof(*out));
    inferd_request_params p = inferd_request_params_default();
    p.text = PROMPT;
    p.text_len = strlen(PROMPT);
    p.max_tokens = N_GEN;
    p.ignore_eos = true;
    p.sampling.temperature = 0;
    p.sampling.has_seed = true;
    p.sampling.seed = 1;
    inferd_request *req = NULL;
    int rc = inferd_sched_submit(inferd_registry_handle_sched(h), &p, &req, err);
    if (rc < 0)
        return rc;
    for (;;) {
        inferd_event ev;
        assert_int_equal(inferd_request_next(req, &ev, -1), 0);
        if (ev.type == INFERD_EVENT_TOKEN) {
            assert_true(out->n_ids < N_GEN);
            out->ids[out->n_ids++] = ev.token;
            continue;
        }
        if (ev.type == INFERD_EVENT_ERROR) {
            out->code = ev.code;
            snprintf(out->message, sizeof(out->message), "%s", ev.message);
        }
        break;
    }
    inferd_request_release(req);
    return 0;
}

static void run_done(inferd_registry_handle *h, outcome *out)
{
    inferd_error err = {0};
    assert_int_equal(run(h, out, &err), 0);
    if (out->code != 0)
        fail_msg("request failed: %s", out->message);
    assert_int_equal(out->n_ids, N_GEN);
}

static void assert_other_tokens(const outcome *a, const outcome *b)
{
    assert_int_equal(a->n_ids, b->n_ids);
    assert_memory_not_equal(a->ids, b->ids, a->n_ids * sizeof(int32_t));
}

static void assert_same_tokens(const outcome *a, const outcome *b)
{
    assert_int_equal(a->n_ids, b->n_ids);
    assert_memory_equal(a->ids, b->ids, a->n_ids * sizeof(int32_t));
}

/* The error every request gets once the file changed under the model. */
static void assert_file_error(int code, const char *msg)
{
    assert_int_equal(code, INFERD_E_IO);
    assert_non_null(strstr(msg, "changed on disk while loaded"));
    assert_non_null(strstr(msg, live));
    assert_non_null(strstr(msg, "reload needed"));
}

static uint64_t file_reloads(inferd_registry *r)
{
    inferd_registry_metrics m;
    inferd_registry_get_metrics(r, &m);
    return m.file_reloads;
}

/* The tokens of fixture @p file, loaded from the fixture itself. */
static void reference(const char *file, outcome *out)
{
    char path[512];
    fixture(path, sizeof(path), file);
    inferd_registry *r = make_registry();
    inferd_registry_handle *h = get_ok(r, path, false);
    run_done(h, out);
    inferd_registry_release(r, h);
    inferd_registry_destroy(r);
}

static void test_model_file_truncated_then_restored(void **state)
{
    (void)state;
    inferd_registry *r = make_registry();
    inferd_registry_handle *h = get_ok(r, live, false);
    outcome before, o;
    run_done(h, &before);

    assert_int_equal(truncate(live, 0), 0);
    /* The pass reads weights past the new end (zeros, not SIGBUS): nothing
     * it computed is emitted. */
    inferd_error err = {0};
    assert_int_equal(run(h, &o, &err), 0);
    assert_int_equal(o.n_ids, 0);
    assert_file_error(o.code, o.message);
    /* Later requests to that instance are refused the same way ... */
    assert_int_equal(run(h, &o, &err), INFERD_E_IO);
    assert_file_error(err.code, err.msg);
    /* ... and so are gets while it is held. */
    inferd_registry_handle *h2 = NULL;
    memset(&err, 0, sizeof(err));
    assert_int_equal(get(r, "m", live, false, &h2, &err), INFERD_E_IO);
    assert_file_error(err.code, err.msg);

    /* The last release unloads it; the next get loads the file again,
     * which fails as any load of an empty file does. */
    inferd_registry_release(r, h);
    assert_int_equal(file_reloads(r), 1);
    inferd_registry_metrics m;
    inferd_registry_get_metrics(r, &m);
    assert_int_equal(m.n_models, 0);
    memset(&err, 0, sizeof(err));
    assert_int_equal(get(r, "m", live, false, &h2, &err), INFERD_E_FORMAT);
    assert_non_null(strstr(err.msg, "file size 0"));

    /* A good file back: served again, with the same tokens. */
    copy_fixture(live, "stories260K.gguf", -1);
    h = get_ok(r, live, false);
    run_done(h, &o);
    assert_same_tokens(&before, &o);
    inferd_registry_release(r, h);
    inferd_registry_destroy(r);
}

static void test_model_file_overwritten_in_place(void **state)
{
    (void)state;
    outcome before, other, o;
    reference("random-dim256-f16.gguf", &other);
    inferd_registry *r = make_registry();
    inferd_registry_handle *h = get_ok(r, live, false);
    run_done(h, &before);
    assert_other_tokens(&before, &other);

    /* Another (larger) model written over the same inode while held. */
    copy_fixture(live, "random-dim256-f16.gguf", -1);
    inferd_error err = {0};
    assert_int_equal(run(h, &o, &err), 0);
    assert_int_equal(o.n_ids, 0);
    assert_file_error(o.code, o.message);
    inferd_registry_release(r, h);
    assert_int_equal(file_reloads(r), 1);

    /* Reloaded: the new model's tokens, never a mix. */
    h = get_ok(r, live, false);
    run_done(h, &o);
    assert_same_tokens(&other, &o);
    inferd_registry_release(r, h);

    /* Idle when the file changes: the get itself reloads. */
    copy_fixture(live, "stories260K.gguf", -1);
    h = get_ok(r, live, false);
    assert_int_equal(file_reloads(r), 2);
    run_done(h, &o);
    assert_same_tokens(&before, &o);
    inferd_registry_release(r, h);
    inferd_registry_destroy(r);
}

static void test_model_file_renamed_over(void **state)
{
    (void)state;
    outcome before, other, o;
    reference("random-dim256-f16.gguf", &other);
    inferd_registry *r = make_registry();
    inferd_registry_handle *h = get_ok(r, live, false);
    run_done(h, &before);

    /* A new file renamed over the path: the loaded one is intact and keeps
     * serving while it is held. */
    rename_fixture_over("random-dim256-f16.gguf", -1);
    inferd_registry_handle *h2 = get_ok(r, live, false);
    assert_ptr_equal(h2, h);
    run_done(h2, &o);
    assert_same_tokens(&before, &o);
    inferd_registry_release(r, h2);
    inferd_registry_release(r, h);
    assert_int_equal(file_reloads(r), 0);

    /* Idle: the next get loads the new file. */
    h = get_ok(r, live, false);
    assert_int_equal(file_reloads(r), 1);
    run_done(h, &o);
    assert_same_tokens(&other, &o);
    inferd_registry_release(r, h);

    /* A new file that does not load is not swapped in. */
    rename_fixture_over("stories260K.gguf", 4096);
    h = get_ok(r, live, false);
    assert_int_equal(file_reloads(r), 1);
    run_done(h, &o);
    assert_same_tokens(&other, &o);
    inferd_registry_release(r, h);

    /* A good one is. */
    rename_fixture_over("stories260K.gguf", -1);
    h = get_ok(r, live, false);
    assert_int_equal(file_reloads(r), 2);
    run_done(h, &o);
    assert_same_tokens(&before, &o);
    inferd_registry_release(r, h);
    inferd_registry_destroy(r);
}

static void test_model_file_no_mmap(void **state)
{
    (void)state;
    inferd_registry *r = make_registry();
    inferd_registry_handle *h = get_ok(r, live, true);
    outcome before, o;
    run_done(h, &before);

    /* The weights were read into memory: truncation cannot reach them. */
    assert_int_equal(truncate(live, 0), 0);
    run_done(h, &o);
    assert_same_tokens(&before, &o);
    inferd_registry_release(r, h);
    /* Idle, the path changed, but what is there does not load: the loaded
     * model keeps serving. */
    h = get_ok(r, live, true);
    assert_int_equal(file_reloads(r), 0);
    run_done(h, &o);
    assert_same_tokens(&before, &o);
    inferd_registry_release(r, h);

    /* A good file back is loaded (the same model). */
    copy_fixture(live, "stories260K.gguf", -1);
    h = get_ok(r, live, true);
    assert_int_equal(file_reloads(r), 1);
    run_done(h, &o);
    assert_same_tokens(&before, &o);
    inferd_registry_release(r, h);
    inferd_registry_destroy(r);
}

static void test_model_file_check_direct(void **state)
{
    (void)state;
    /* The model's own checks, without the registry. */
    inferd_model *m = NULL;
    inferd_error err = {0};
    inferd_model_params mp = inferd_model_params_default();
    assert_int_equal(inferd_model_load(live, &mp, &m, &err), 0);
    assert_int_equal(inferd_model_check_file(m, &err), 0);
    assert_false(inferd_model_path_changed(m, NULL));
    /* Appending changes size and mtime: in-place modification. */
    int fd = open(live, O_WRONLY | O_APPEND | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    assert_int_equal(inferd_model_check_file(m, &err), INFERD_E_IO);
    assert_non_null(strstr(err.msg, "modified in place"));
    inferd_file_id now;
    assert_true(inferd_model_path_changed(m, &now));
    struct stat st;
    assert_int_equal(stat(live, &st), 0);
    assert_int_equal(now.ino, (uint64_t)st.st_ino);
    assert_int_equal(now.size_bytes, (uint64_t)st.st_size);
    /* Once failed it keeps failing, whatever the file looks like later. */
    assert_int_equal(truncate(live, st.st_size - 1), 0);
    assert_int_equal(inferd_model_check_file(m, &err), INFERD_E_IO);
    assert_non_null(strstr(err.msg, "modified in place"));
    inferd_model_destroy(m);
    copy_fixture(live, "stories260K.gguf", -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_model_file_truncated_then_restored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_file_overwritten_in_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_file_renamed_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_file_no_mmap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_file_check_direct, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
