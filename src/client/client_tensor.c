/* KServe inference and shared-memory regions through the client
 * (client.h): the request's JSON with its inputs as JSON data, binary data
 * (sent from the caller's memory without a copy) or references into a
 * region; the answer's outputs as pointers into the answer or the region. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_internal.h"
#include "inferd/alloc.h"
#include "inferd/tensor_json.h"

#define KT_MAX 16 /* inputs or outputs of one request, as the worker takes */

/* ---- regions ---- */

/* Region names go into URLs: letters, digits, '.', '_' and '-'. */
static int check_name(const char *name, inferd_error *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= sizeof(((inferd_client_region *)0)->name))
        return inferd_fail(err, INFERD_E_INVALID, "region name: 1 to 127 bytes");
    for (size_t i = 0; i < n; i++) {
        const char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return inferd_fail(err, INFERD_E_INVALID,
                               "region name '%s': only letters, digits, '.', '_' and '-'", name);
    }
    return 0;
}

/* Map shared-memory object @p fd of @p bytes into @p r. */
static int map_region(int fd, size_t bytes, inferd_client_region *r, inferd_error *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < bytes)
        return inferd_fail_errno(err, INFERD_E_IO, errno,
                                 "region '%s': the object %s has %lld "
                                 "bytes, fewer than %zu",
                                 r->name, r->key, (long long)st.st_size, bytes);
    void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return inferd_fail_errno(err, INFERD_E_IO, errno, "region '%s': cannot map %s: %s", r->name,
                                 r->key, strerror(errno));
    r->base = p;
    r->size = bytes;
    return 0;
}

static int region_call(inferd_client *c, const char *name, const char *what, json_t *body,
                       client_call *k, inferd_error *err)
{
    char path[256];
    snprintf(path, sizeof(path), "/v2/systemsharedmemory/region/%s/%s", name, what);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s)
        return inferd_fail(err, INFERD_E_NOMEM, "client: no memory for the request");
    memset(k, 0, sizeof(*k));
    k->method = "POST";
    k->path = path;
    k->content_type = "application/json";
    k->req = s;
    k->req_len = strlen(s);
    int rc = inferd__client_call(c, k, err);
    inferd_free(s);
    k->path = NULL;
    return rc;
}

int inferd_client_region_create(inferd_client *c, const char *name, size_t bytes,
                                inferd_client_region **out, inferd_error *err)
{
    *out = NULL;
    int rc = check_name(name, err);
    if (rc < 0)
        return rc;
    client_call k;
    rc =
        region_call(c, name, "create", json_pack("{s:I}", "byte_size", (json_int_t)bytes), &k, err);
    json_t *j =
        rc == 0 ? json_loadb(k.body.p ? k.body.p : "", k.body.len, JSON_ALLOW_NUL, NULL) : NULL;
    inferd__client_call_fini(&k);
    if (rc < 0)
        return rc;
    const char *key = json_string_value(json_object_get(j, "key"));
    inferd_client_region *r = inferd_calloc(1, sizeof(*r));
    if (!key || !r || strlen(key) >= sizeof(r->key)) {
        json_decref(j);
        inferd_free(r);
        return inferd_fail(err, r ? INFERD_E_TRANSPORT : INFERD_E_NOMEM,
                           "region '%s': the worker's answer has no key", name);
    }
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->key, sizeof(r->key), "%s", key);
    r->created_by_worker = true;
    json_decref(j);
    int fd = shm_open(r->key, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0)
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "region '%s': cannot open %s: %s", name,
                               r->key, strerror(errno));
    else {
        rc = map_region(fd, bytes, r, err);
        close(fd);
    }
    if (rc < 0) { /* give it back */
        inferd_error e2 = {0};
        region_call(c, name, "unregister", json_object(), &k, &e2);
        inferd__client_call_fini(&k);
        inferd_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int inferd_client_region_register(inferd_client *c, const char *name, size_t bytes,
                                  inferd_client_region **out, inferd_error *err)
{
    *out = NULL;
    int rc = check_name(name, err);
    if (rc < 0)
        return rc;
    inferd_client_region *r = inferd_calloc(1, sizeof(*r));
    if (!r)
        return inferd_fail(err, INFERD_E_NOMEM, "client: no memory");
    snprintf(r->name, sizeof(r->name), "%s", name);
    uint8_t rnd[8] = {0};
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0, sizeof(rnd));
    snprintf(r->key, sizeof(r->key), "/inferd-client-%ld-%02x%02x%02x%02x%02x%02x%02x%02x",
             (long)getpid(), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    int fd = shm_open(r->key, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = inferd_fail_errno(err, INFERD_E_IO, errno, "region '%s': cannot make %s: %s", name,
                               r->key, strerror(errno));
        inferd_free(r);
        return rc;
    }
    int e = bytes ? posix_fallocate(fd, 0, (off_t)bytes) : 0;
    if (e != 0)
        rc = inferd_fail_errno(err, INFERD_E_IO, e, "region '%s': cannot reserve %zu bytes: %s",
                               name, bytes, strerror(e));
    else
        rc = map_region(fd, bytes, r, err);
    close(fd);
    client_call k;
    if (rc == 0) {
        rc = region_call(
            c, name, "register",
            json_pack("{s:s,s:i,s:I}", "key", r->key, "offset", 0, "byte_size", (json_int_t)bytes),
            &k, err);
        inferd__client_call_fini(&k);
        if (rc < 0)
            munmap(r->base, r->size ? r->size : 1);
    }
    if (rc < 0) {
        shm_unlink(r->key);
        inferd_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int inferd_client_region_release(inferd_client *c, inferd_client_region *r, inferd_error *err)
{
    if (!r)
        return 0;
    client_call k;
    int rc = region_call(c, r->name, "unregister", json_object(), &k, err);
    inferd__client_call_fini(&k);
    if (r->base)
        munmap(r->base, r->size ? r->size : 1);
    if (!r->created_by_worker)
        shm_unlink(r->key);
    inferd_free(r);
    return rc;
}

int inferd_client_register_key(inferd_client *c, const char *name, const char *key, uint64_t offset,
                               uint64_t bytes, inferd_error *err)
{
    int rc = check_name(name, err);
    if (rc < 0)
        return rc;
    if (!key || key[0] != '/')
        return inferd_fail(err, INFERD_E_INVALID, "region '%s': the key must start with '/'", name);
    client_call k;
    rc = region_call(c, name, "register",
                     json_pack("{s:s,s:I,s:I}", "key", key, "offset", (json_int_t)offset,
                               "byte_size", (json_int_t)bytes),
                     &k, err);
    inferd__client_call_fini(&k);
    return rc;
}

int inferd_client_unregister(inferd_client *c, const char *name, inferd_error *err)
{
    int rc = check_name(name, err);
    if (rc < 0)
        return rc;
    client_call k;
    rc = region_call(c, name, "unregister", json_object(), &k, err);
    inferd__client_call_fini(&k);
    return rc;
}

/* ---- inference ---- */

void inferd_client_infer_result_free(inferd_client_infer_result *r)
{
    if (!r)
        return;
    inferd_free(r->json);
    inferd_free(r->memory);
    while (r->blocks) {
        void *next = *(void **)r->blocks;
        inferd_free(r->blocks);
        r->blocks = next;
    }
    memset(r, 0, sizeof(*r));
}

static uint64_t numel_of(const inferd_client_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        n *= (uint64_t)t->shape[d];
    return n;
}

/* Input @p t's elements as a JSON array (row-major; BYTES as strings). */
static json_t *input_data(const inferd_client_tensor *t, inferd_error *err)
{
    const char *p = t->data;
    json_t *a = json_array();
    if (!a)
        return NULL;
    if (t->elem == INFERD_ELEM_BYTES) {
        for (size_t at = 0; at < t->bytes;) {
            uint32_t n;
            if (t->bytes - at < 4 || (memcpy(&n, p + at, 4), n > t->bytes - at - 4)) {
                inferd_fail(err, INFERD_E_INVALID, "input '%s': malformed BYTES encoding", t->name);
                json_decref(a);
                return NULL;
            }
            json_t *s = json_stringn(p + at + 4, n);
            if (!s) {
                inferd_fail(err, INFERD_E_INVALID,
                            "input '%s': an element is not UTF-8 text: send it as binary data",
                            t->name);
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, s);
            at += 4 + (size_t)n;
        }
        return a;
    }
    const size_t esz = inferd_elem_size(t->elem);
    const uint64_t n = numel_of(t);
    if (n * esz != t->bytes) {
        inferd_fail(err, INFERD_E_INVALID, "input '%s': %zu bytes, the shape needs %llu", t->name,
                    t->bytes, (unsigned long long)(n * esz));
        json_decref(a);
        return NULL;
    }
    for (uint64_t i = 0; i < n; i++)
        if (json_array_append_new(a, inferd_elem_to_json(t->elem, p + i * esz)) != 0) {
            inferd_fail(err, INFERD_E_NOMEM, "client: no memory for input '%s'", t->name);
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *shm_params(const inferd_client_tensor *t, size_t bytes)
{
    return json_pack("{s:s,s:I,s:I}", "shared_memory_region", t->region->name,
                     "shared_memory_byte_size", (json_int_t)bytes, "shared_memory_offset",
                     (json_int_t)t->offset);
}

/* The request's JSON; binary inputs' pieces into iov[1..]. */
static json_t *infer_request(const inferd_client_tensor *in, size_t n_in,
                             const inferd_client_tensor *out, size_t n_out, const char *params_json,
                             struct iovec *iov, int *n_iov, inferd_error *err)
{
    json_t *req = json_object(), *ins = json_array(), *outs = json_array();
    json_object_set_new(req, "inputs", ins);
    if (!req || !ins || !outs) {
        json_decref(req);
        json_decref(outs);
        inferd_fail(err, INFERD_E_NOMEM, "client: no memory for the request");
        return NULL;
    }
    for (size_t i = 0; i < n_in; i++) {
        const inferd_client_tensor *t = &in[i];
        json_t *shape = json_array();
        for (uint32_t d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *o = json_pack("{s:s,s:s,s:o}", "name", t->name, "datatype",
                              inferd_elem_name(t->elem), "shape", shape);
        json_array_append_new(ins, o);
        if (!o)
            continue;
        if (t->via == INFERD_CLIENT_VIA_SHM) {
            if (!t->region || t->offset > t->region->size ||
                t->bytes > t->region->size - t->offset) {
                inferd_fail(err, INFERD_E_INVALID, "input '%s': its bytes are not in its region",
                            t->name);
                goto fail;
            }
            json_object_set_new(o, "parameters", shm_params(t, t->bytes));
        } else if (t->via == INFERD_CLIENT_VIA_BINARY) {
            json_object_set_new(o, "parameters",
                                json_pack("{s:I}", "binary_data_size", (json_int_t)t->bytes));
            iov[(*n_iov)++] = (struct iovec){(void *)t->data, t->bytes};
        } else {
            json_t *d = input_data(t, err);
            if (!d)
                goto fail;
            json_object_set_new(o, "data", d);
        }
    }
    for (size_t i = 0; i < n_out; i++) {
        const inferd_client_tensor *t = &out[i];
        json_t *p = t->via == INFERD_CLIENT_VIA_SHM      ? shm_params(t, t->bytes)
                    : t->via == INFERD_CLIENT_VIA_BINARY ? json_pack("{s:b}", "binary_data", 1)
                                                         : json_pack("{s:b}", "binary_data", 0);
        if (t->via == INFERD_CLIENT_VIA_SHM &&
            (!t->region || t->offset > t->region->size || t->bytes > t->region->size - t->offset)) {
            json_decref(p);
            inferd_fail(err, INFERD_E_INVALID, "output '%s': its room is not in its region",
                        t->name);
            goto fail;
        }
        json_array_append_new(outs, json_pack("{s:s,s:o}", "name", t->name, "parameters", p));
    }
    json_object_set_new(req, "outputs", outs);
    outs = NULL;
    if (params_json) {
        json_error_t je;
        json_t *p = json_loads(params_json, 0, &je);
        if (!json_is_object(p)) {
            json_decref(p);
            inferd_fail(err, INFERD_E_INVALID, "params: not a JSON object (%s)", je.text);
            goto fail;
        }
        json_object_set_new(req, "parameters", p);
    }
    return req;
fail:
    json_decref(outs);
    json_decref(req);
    return NULL;
}

/* Output @p t's JSON data @p d as bytes in a new block of @p res. */
static int output_from_json(inferd_client_tensor *t, json_t *d, inferd_client_infer_result *res,
                            inferd_error *err)
{
    const uint64_t n = numel_of(t);
    size_t bytes = 0;
    if (!json_is_array(d) || json_array_size(d) != n)
        return inferd_fail(err, INFERD_E_TRANSPORT,
                           "output '%s': its data has %zu elements, "
                           "its shape %llu",
                           t->name, json_array_size(d), (unsigned long long)n);
    if (t->elem == INFERD_ELEM_BYTES)
        for (size_t i = 0; i < n; i++)
            bytes += 4 + json_string_length(json_array_get(d, i));
    else
        bytes = (size_t)n * inferd_elem_size(t->elem);
    void **blk = inferd_malloc(sizeof(void *) + bytes + 1);
    if (!blk)
        return inferd_fail(err, INFERD_E_NOMEM, "client: no memory for output '%s'", t->name);
    *blk = res->blocks;
    res->blocks = blk;
    char *p = (char *)(blk + 1);
    for (size_t i = 0, at = 0; i < n; i++) {
        json_t *v = json_array_get(d, i);
        if (t->elem == INFERD_ELEM_BYTES) {
            const uint32_t k = (uint32_t)json_string_length(v);
            if (!json_is_string(v))
                return inferd_fail(err, INFERD_E_TRANSPORT,
                                   "output '%s': a BYTES element is "
                                   "not a string",
                                   t->name);
            memcpy(p + at, &k, 4);
            memcpy(p + at + 4, json_string_value(v), k);
            at += 4 + k;
        } else if (inferd_elem_from_json(t->elem, v, p + i * inferd_elem_size(t->elem)) < 0) {
            return inferd_fail(err, INFERD_E_TRANSPORT, "output '%s': element %zu is not a %s",
                               t->name, i, inferd_elem_name(t->elem));
        }
    }
    t->data = p;
    t->bytes = bytes;
    return 0;
}

/* Fill the asked-for @p outs from the answer's "outputs" @p list (binary
 * bytes at @p bin, @p bin_len). */
static int read_outputs(json_t *list, const char *bin, size_t bin_len, inferd_client_tensor *outs,
                        size_t n_out, inferd_client_infer_result *res, inferd_error *err)
{
    size_t at = 0, i;
    json_t *o;
    bool found[KT_MAX] = {false};
    json_array_foreach (list, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        json_t *p = json_object_get(o, "parameters");
        json_t *bsz = json_object_get(p, "binary_data_size");
        inferd_client_tensor *t = NULL;
        for (size_t k = 0; name && k < n_out; k++)
            if (strcmp(outs[k].name, name) == 0 && !found[k]) {
                t = &outs[k];
                found[k] = true;
            }
        if (!t) { /* not asked for: skip its bytes */
            at += bsz ? (size_t)json_integer_value(bsz) : 0;
            continue;
        }
        const int e = inferd_elem_parse(json_string_value(json_object_get(o, "datatype")));
        json_t *shape = json_object_get(o, "shape");
        if (e < 0 || !json_is_array(shape) || json_array_size(shape) > INFERD_TENSOR_DIMS_MAX)
            return inferd_fail(err, INFERD_E_TRANSPORT, "output '%s': no datatype or shape", name);
        t->elem = (inferd_elem)e;
        t->ndim = (uint32_t)json_array_size(shape);
        for (uint32_t d = 0; d < t->ndim; d++)
            t->shape[d] = json_integer_value(json_array_get(shape, d));
        if (json_object_get(p, "shared_memory_region")) {
            if (!t->region)
                return inferd_fail(err, INFERD_E_TRANSPORT,
                                   "output '%s' came in shared memory, asked for otherwise", name);
            t->bytes = (size_t)json_integer_value(json_object_get(p, "shared_memory_byte_size"));
            t->data = (const char *)t->region->base + t->offset;
        } else if (bsz) {
            const size_t n = (size_t)json_integer_value(bsz);
            if (n > bin_len - at)
                return inferd_fail(err, INFERD_E_TRANSPORT,
                                   "output '%s': %zu binary bytes, "
                                   "the answer has %zu",
                                   name, n, bin_len - at);
            t->data = bin + at;
            t->bytes = n;
            at += n;
        } else {
            int rc = output_from_json(t, json_object_get(o, "data"), res, err);
            if (rc < 0)
                return rc;
        }
    }
    for (size_t k = 0; k < n_out; k++)
        if (!found[k])
            return inferd_fail(err, INFERD_E_INVALID, "output '%s' is not in the answer",
                               outs[k].name);
    return 0;
}

int inferd_client_infer(inferd_client *c, const char *model, const inferd_client_tensor *inputs,
                        size_t n_inputs, inferd_client_tensor *outputs, size_t n_outputs,
                        const char *params_json, inferd_client_infer_result *out, inferd_error *err)
{
    memset(out, 0, sizeof(*out));
    if (!model || n_inputs == 0 || n_inputs > KT_MAX || n_outputs > KT_MAX)
        return inferd_fail(err, INFERD_E_INVALID,
                           "infer: a model and 1 to %d inputs, at most %d outputs", KT_MAX, KT_MAX);
    for (size_t k = 0; k < n_outputs; k++) { /* filled by the answer */
        outputs[k].data = outputs[k].via == INFERD_CLIENT_VIA_SHM ? outputs[k].data : NULL;
        if (outputs[k].via != INFERD_CLIENT_VIA_SHM)
            outputs[k].bytes = 0;
        outputs[k].elem = 0;
        outputs[k].ndim = 0;
    }
    struct iovec iov[KT_MAX + 1];
    int n_iov = 1;
    json_t *req =
        infer_request(inputs, n_inputs, outputs, n_outputs, params_json, iov, &n_iov, err);
    char *js = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!js)
        return err && err->code ? err->code : inferd_fail(err, INFERD_E_NOMEM, "client: no memory");
    const size_t js_len = strlen(js);
    iov[0] = (struct iovec){js, js_len};
    char path[512], hl[64];
    snprintf(path, sizeof(path), "/v2/models/%s/infer", model);
    snprintf(hl, sizeof(hl), "Inference-Header-Content-Length: %zu", js_len);
    client_call k;
    memset(&k, 0, sizeof(k));
    k.method = "POST";
    k.path = path;
    k.iov = iov;
    k.n_iov = n_iov;
    k.content_type = n_iov > 1 ? "application/octet-stream" : "application/json";
    k.extra_header = n_iov > 1 ? hl : NULL;
    int rc = inferd__client_call(c, &k, err);
    inferd_free(js);
    if (rc < 0) {
        inferd__client_call_fini(&k);
        return rc;
    }
    const size_t jn = k.has_json_len && k.json_len <= k.body.len ? k.json_len : k.body.len;
    json_error_t je;
    json_t *ans = json_loadb(k.body.p ? k.body.p : "", jn, JSON_ALLOW_NUL, &je);
    if (!ans) {
        inferd__client_call_fini(&k);
        return inferd_fail(err, INFERD_E_TRANSPORT, "a malformed answer from the worker: %s",
                           je.text);
    }
    out->json = inferd_strndup(k.body.p, jn);
    out->memory = k.body.p; /* binary outputs point into it */
    const size_t body_len = k.body.len;
    k.body.p = NULL;
    inferd__client_call_fini(&k);
    rc = read_outputs(json_object_get(ans, "outputs"), (const char *)out->memory + jn,
                      body_len - jn, outputs, n_outputs, out, err);
    json_decref(ans);
    if (rc == 0 && !out->json)
        rc = inferd_fail(err, INFERD_E_NOMEM, "client: no memory");
    if (rc < 0)
        inferd_client_infer_result_free(out);
    return rc;
}
