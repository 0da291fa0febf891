/* The sample header every pipeline channel carries (docs/pipeline.md). */
#include <string.h>

#include "inferd/pipeline.h"
#include "sample.h"
#include "inferd/tensor.h"

int inferd_sample_check(const void *sample, uint64_t len, inferd_error *err)
{
    if (len < sizeof(inferd_sample_header))
        return inferd_fail(err, INFERD_E_FORMAT, "sample: %llu bytes, shorter than its header",
                           (unsigned long long)len);
    inferd_sample_header h;
    memcpy(&h, sample, sizeof(h));
    if (h.magic != INFERD_SAMPLE_MAGIC)
        return inferd_fail(err, INFERD_E_FORMAT, "sample: no header (magic %08x)", h.magic);
    if (h.bytes > len - sizeof(h))
        return inferd_fail(err, INFERD_E_FORMAT,
                           "sample: its header says %llu payload bytes, %llu follow",
                           (unsigned long long)h.bytes, (unsigned long long)(len - sizeof(h)));
    if (h.flags & INFERD_SAMPLE_END)
        return 0;
    if (h.elem >= INFERD_ELEM_BYTES || h.ndim > INFERD_SAMPLE_DIMS)
        return inferd_fail(err, INFERD_E_FORMAT, "sample: element type %u, %u dimensions", h.elem,
                           h.ndim);
    uint64_t n = 1;
    for (uint32_t d = 0; d < h.ndim; d++) {
        if (h.shape[d] < 0 || (h.shape[d] && n > UINT64_MAX / (uint64_t)h.shape[d]))
            return inferd_fail(err, INFERD_E_FORMAT, "sample: dimension %u is %lld", d,
                               (long long)h.shape[d]);
        n *= (uint64_t)h.shape[d];
    }
    if (n > UINT64_MAX / 8 || n * inferd_elem_size((inferd_elem)h.elem) != h.bytes)
        return inferd_fail(err, INFERD_E_FORMAT,
                           "sample: its shape holds %llu %s elements, not %llu bytes",
                           (unsigned long long)n, inferd_elem_name((inferd_elem)h.elem),
                           (unsigned long long)h.bytes);
    if ((h.flags & INFERD_SAMPLE_TEXT) && (h.elem != INFERD_ELEM_U8 || h.ndim != 1))
        return inferd_fail(err, INFERD_E_FORMAT, "sample: text is U8 of one dimension");
    return 0;
}

int inferd__sample_send(inferd_channel *ch, inferd_sample_header h, uint64_t session,
                        const void *data, uint64_t bytes, int64_t timeout_ms, inferd_error *err)
{
    const uint64_t cap = inferd_channel_get_spec(ch).slot_bytes;
    if (bytes > cap - sizeof(h))
        return inferd_fail_param(err, INFERD_E_TOO_LARGE, "bytes",
                                 "a sample of %llu bytes, the channel takes %llu",
                                 (unsigned long long)bytes, (unsigned long long)(cap - sizeof(h)));
    inferd_sample s;
    int rc = inferd_channel_loan(ch, timeout_ms, &s, err);
    if (rc < 0)
        return rc;
    h.magic = INFERD_SAMPLE_MAGIC;
    h.session = session;
    h.bytes = bytes;
    memcpy(s.data, &h, sizeof(h));
    if (bytes)
        memcpy((char *)s.data + sizeof(h), data, bytes);
    return inferd_channel_publish(ch, &s, sizeof(h) + bytes, err);
}

inferd_sample_header inferd__sample_text_header(size_t len)
{
    return (inferd_sample_header){
        .flags = INFERD_SAMPLE_TEXT, .elem = INFERD_ELEM_U8, .ndim = 1, .shape = {(int64_t)len}};
}
