/* Fuzzes the pipeline spec (coordinator/spec.c), which xcoord parses from any client. A spec it
 * accepts must expand, and every job's config must read back as a YAML mapping (the quoting
 * holds whatever the paths contain); a refused one must come with a message. */
#include "coordinator/coordinator.h"

#include <string.h>
#include <yaml.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_mapping(const char *text) {
    yaml_parser_t p;
    yaml_document_t d;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    int ok = 0;
    if (yaml_parser_load(&p, &d)) {
        yaml_node_t *root = yaml_document_get_root_node(&d);
        ok = root && root->type == YAML_MAPPING_NODE;
        yaml_document_delete(&d);
    }
    yaml_parser_delete(&p);
    return ok;
}

static int contains(const uint8_t *data, size_t size, const char *word) {
    size_t n = strlen(word);
    for (size_t i = 0; i + n <= size; i++)
        if (!memcmp(data + i, word, n)) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* layer_blocks without num_layers reads the teacher from disk: keep the fuzzer off the file
     * system (the daemon itself refuses anything but a regular file or a directory) */
    if (contains(data, size, "layer_blocks") && !contains(data, size, "num_layers")) return 0;
    coord_spec *s = NULL;
    xd_err e;
    e.msg[0] = 0;
    if (coord_spec_parse((const char *)data, size, &s, &e)) {
        if (!e.msg[0] || s) __builtin_trap();
        return 0;
    }
    coord_dag d;
    if (coord_spec_expand(s, "/art", "run-1-abcd", &d, &e)) __builtin_trap();
    for (int i = 0; i < d.n_jobs; i++)
        if (!is_mapping(d.jobs[i].config)) __builtin_trap();
    coord_dag_free(&d);
    coord_spec_free(s);
    return 0;
}
