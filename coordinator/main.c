/* xcoord: the coordinator daemon (docs/coordinator.md). */
#include "coordinator.h"

#include <stdio.h>

int main(int argc, char **argv) {
    coord_options o;
    xd_err e = {{0}};
    int rc = coord_parse_args(argc - 1, argv + 1, &o, &e);
    if (rc == 1) return 0;
    if (rc) {
        fprintf(stderr, "xcoord: %s\n", e.msg);
        return 2;
    }
    if (coord_serve(&o, &e)) {
        fprintf(stderr, "xcoord: %s\n", e.msg);
        return 1;
    }
    return 0;
}
