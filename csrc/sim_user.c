/*
 * The process's memory as the kernel reaches it: copyin/copyout that fail
 * with EFAULT instead of faulting, and zero-copy pages the engine keeps
 * mapped for itself (FreeBSD wires them) whatever the process does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#ifdef __linux__
#include <sys/uio.h>
#endif
#include "sim_engine_priv.h"

/* write(2) and read(2) return EFAULT for a bad buffer: the portable probe. */
static int pipe_copy(void *dst, const void *src, size_t len)
{
    int p[2], err = 0;
    if (pipe(p) != 0)
        return -errno;
    while (len > 0) {
        size_t chunk = len < 4096 ? len : 4096;   /* < PIPE_BUF: never blocks */
        if (write(p[1], src, chunk) != (ssize_t)chunk ||
            read(p[0], dst, chunk) != (ssize_t)chunk) {
            err = -EFAULT;
            break;
        }
        src = (const char *)src + chunk;
        dst = (char *)dst + chunk;
        len -= chunk;
    }
    close(p[0]);
    close(p[1]);
    return err;
}

/* process_vm_readv/writev on the process itself copy in one call and report
 * an unmapped page as EFAULT; where a sandbox refuses them, use a pipe. */
static int checked_copy(void *dst, const void *src, size_t len, int out)
{
    if (len == 0)
        return 0;
#ifdef __linux__
    {
        struct iovec local = {out ? (void *)src : dst, len};
        struct iovec remote = {out ? dst : (void *)src, len};
        ssize_t n = out ? process_vm_writev(getpid(), &local, 1, &remote, 1, 0)
                        : process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
        if (n == (ssize_t)len)
            return 0;
        if (n >= 0 || errno == EFAULT)
            return -EFAULT;
    }
#endif
    return pipe_copy(dst, src, len);
}

int bsdbpf_sim_copyin(void *kaddr, const void *uaddr, size_t len)
{
    return checked_copy(kaddr, uaddr, len, 0);
}

int bsdbpf_sim_copyout(void *uaddr, const void *kaddr, size_t len)
{
    return checked_copy(uaddr, kaddr, len, 1);
}

/*
 * The engine's own mapping of a zero-copy buffer's pages.  Linux has no way to
 * wire or pin another mapping's pages for user space, so:
 *  - a buffer in one MAP_SHARED mapping (mmap.mmap(-1, n), a memfd, a file)
 *    is mapped a second time with mremap(old_size = 0), which maps the same
 *    object, not a copy;
 *  - a private buffer cannot be mapped twice, so its contents move into a
 *    memfd mapped over it at the same address (MAP_FIXED), and the engine
 *    maps that memfd too.  The process sees the same bytes at the same
 *    address; only a later fork shares these pages instead of copying them.
 * Either way a munmap() by the process leaves the engine's mapping intact,
 * as FreeBSD's wired pages are, until the descriptor is freed.
 */
void *sim_zbuf_map(void *uaddr, size_t len, int shared)
{
#ifdef __linux__
    void *map;
    int fd, err;
    if (shared) {
        map = mremap(uaddr, 0, len, MREMAP_MAYMOVE);
        return map == MAP_FAILED ? NULL : map;
    }
    fd = memfd_create("bsdbpf-zbuf", MFD_CLOEXEC);
    if (fd < 0)
        return NULL;
    map = MAP_FAILED;
    if (ftruncate(fd, (off_t)len) == 0)
        map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    err = map == MAP_FAILED ? errno : 0;
    if (!err && bsdbpf_sim_copyin(map, uaddr, len) != 0)
        err = EFAULT;
    if (!err && mmap(uaddr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) ==
                MAP_FAILED)
        err = errno;
    close(fd);
    if (err) {
        if (map != MAP_FAILED)
            munmap(map, len);
        errno = err;
        return NULL;
    }
    return map;
#else
    /* Elsewhere the process must keep the pages mapped while the fd is open. */
    (void)len;
    (void)shared;
    return uaddr;
#endif
}

void sim_zbuf_unmap(void *map, size_t len)
{
#ifdef __linux__
    munmap(map, len);
#else
    (void)map;
    (void)len;
#endif
}
