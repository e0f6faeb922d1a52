/* Fuzzes the wire decoder. Whatever proto_decode accepts must encode again and decode back to the
 * same type and fields (the decoder accepts nothing the encoder would refuse); whatever it refuses
 * must come with a message and no fields. Seeds: tests/fuzz/make_proto_seeds.py. */
#include "proto/proto.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    proto_type t;
    json_t *fields = NULL;
    xd_err e;
    e.msg[0] = 0;
    if (proto_decode(data, size, &t, &fields, &e) != 0) {
        if (!e.msg[0] || fields) __builtin_trap();
        return 0;
    }
    if ((unsigned)t >= PROTO_TYPE_COUNT || !json_is_object(fields)) __builtin_trap();
    void *buf = NULL;
    size_t len = 0;
    if (proto_encode(t, fields, &buf, &len, &e) != 0) __builtin_trap();
    proto_type t2;
    json_t *back = NULL;
    if (proto_decode(buf, len, &t2, &back, &e) != 0 || t2 != t || !json_equal(fields, back))
        __builtin_trap();
    json_decref(back);
    json_decref(fields);
    free(buf);
    return 0;
}
