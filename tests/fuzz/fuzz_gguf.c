/* libFuzzer target for the GGUF reader: any input must either be rejected
 * with an error or open into a handle whose every kv and tensor can be
 * walked without leaving the buffer. Also linked into the replay driver. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "inferd/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read one byte so that sanitizers check the address. */
static volatile uint8_t sink;

static void touch(const void *p, uint64_t len)
{
    if (len) {
        sink ^= ((const uint8_t *)p)[0];
        sink ^= ((const uint8_t *)p)[len - 1];
    }
}

static void walk_kv(const inferd_gguf *g, uint64_t i)
{
    inferd_gguf_str key = inferd_gguf_kv_key(g, i), s;
    inferd_gguf_type t = inferd_gguf_kv_type(g, i);
    char name[64];
    size_t n = key.len < sizeof(name) - 1 ? (size_t)key.len : sizeof(name) - 1;
    inferd_error err;
    uint64_t u64;
    int64_t i64;
    float f;
    bool b;

    touch(key.ptr, key.len);
    if (t == INFERD_GGUF_STRING) {
        s = inferd_gguf_kv_str(g, i);
        touch(s.ptr, s.len);
    } else if (t == INFERD_GGUF_ARRAY) {
        inferd_gguf_type et = inferd_gguf_kv_arr_type(g, i);
        uint64_t an = inferd_gguf_kv_arr_n(g, i);
        const uint8_t *d = inferd_gguf_kv_arr_data(g, i);
        if (et == INFERD_GGUF_STRING) {
            for (uint64_t j = 0; j < an; j++) {
                s = inferd_gguf_kv_arr_str(g, i, j);
                touch(s.ptr, s.len);
            }
        } else if (d && an) {
            touch(d, 1);
            sink ^= d[an - 1]; /* the last byte of at least the last element */
        }
    } else {
        touch(inferd_gguf_kv_data(g, i), 1);
    }

    /* The typed getters go through the sorted index and conversions. */
    memcpy(name, key.ptr, n);
    name[n] = '\0';
    if (strlen(name) == key.len && inferd_gguf_find_key(g, name) == (int64_t)i) {
        (void)inferd_gguf_get_u64(g, name, &u64, &err);
        (void)inferd_gguf_get_i64(g, name, &i64, &err);
        (void)inferd_gguf_get_f32(g, name, &f, &err);
        (void)inferd_gguf_get_bool(g, name, &b, &err);
        (void)inferd_gguf_get_str(g, name, &s, &err);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inferd_error err = {0};
    inferd_gguf *g = NULL;

    if (inferd_gguf_open_memory(data, size, &g, &err) != 0)
        return 0;
    for (uint64_t i = 0; i < inferd_gguf_n_kv(g); i++)
        walk_kv(g, i);
    for (uint64_t i = 0; i < inferd_gguf_n_tensors(g); i++) {
        const inferd_gguf_tensor *t = inferd_gguf_tensor_at(g, i);
        touch(t->name.ptr, t->name.len);
        touch(t->data, t->size_bytes);
    }
    inferd_gguf_close(g);
    return 0;
}
