/* The BPF ABI for C code of the project: FreeBSD's own headers on FreeBSD,
 * the package's statement of them elsewhere. */
#ifndef BSDBPF_ABI_H
#define BSDBPF_ABI_H
#ifdef __FreeBSD__
#include <sys/param.h>   /* SPECNAMELEN, for <sys/conf.h>, which <net/bpfdesc.h> includes */
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/filio.h>
#include <sys/sockio.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <net/if.h>
#include <net/bpf.h>
/* <net/bpfdesc.h> also declares the kernel's struct bpf_d, whose struct mtx
 * member needs these in userland too (netstat has them from <sys/user.h>). */
#include <sys/_lock.h>
#include <sys/_mutex.h>
#include <net/bpfdesc.h>
#include <net/dlt.h>
#else
#include "freebsd_abi.h"
#endif
#endif
