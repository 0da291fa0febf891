/* Writing samples (internal to src/pipeline). */
#ifndef INFERD_PIPELINE_SAMPLE_H
#define INFERD_PIPELINE_SAMPLE_H

#include "inferd/pipeline.h"

/** Loan a slot of @p ch (waiting up to @p timeout_ms), write @p h (its
 * magic, session and bytes set here) and @p bytes of @p data, publish.
 * @return 0; INFERD_E_TOO_LARGE (the slot is smaller: nothing is
 * published), the errors of inferd_channel_loan. */
int inferd__sample_send(inferd_channel *ch, inferd_sample_header h, uint64_t session,
                        const void *data, uint64_t bytes, int64_t timeout_ms, inferd_error *err);

/** The header of a text sample of @p len bytes. */
inferd_sample_header inferd__sample_text_header(size_t len);

#endif
