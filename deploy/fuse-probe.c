/*
 * fuse-probe: container health probe for blobmount, until the daemon has a health command.
 *
 *   fuse-probe DIR    exit 0 if DIR is a live FUSE mount, 1 otherwise (message on stderr)
 *
 * statfs(2) on a FUSE mount is answered by the daemon itself (FUSE_STATFS), so the probe
 * fails when
 *   - DIR is not mounted (the file system type is that of the directory underneath),
 *   - the daemon died and left a dead mount (ENOTCONN),
 *   - the daemon does not answer (the probe blocks; the probe's timeout ends it).
 * Static (musl-gcc -static) so that it runs in the FROM scratch image.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>

#define FUSE_SUPER_MAGIC 0x65735546

int main(int argc, char **argv) {
    struct statfs st;
    if (argc != 2) {
        fprintf(stderr, "usage: fuse-probe DIR\n");
        return 2;
    }
    if (statfs(argv[1], &st) != 0) {
        fprintf(stderr, "fuse-probe: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    if (st.f_type != FUSE_SUPER_MAGIC) {
        fprintf(stderr, "fuse-probe: %s is not a FUSE mount (type 0x%lx)\n", argv[1],
                (unsigned long)st.f_type);
        return 1;
    }
    return 0;
}
