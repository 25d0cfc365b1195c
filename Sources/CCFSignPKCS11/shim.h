#ifndef CCFSIGN_PKCS11_SHIM_H
#define CCFSIGN_PKCS11_SHIM_H
/* The PKCS#11 (Cryptoki) types and constants, from p11-kit's header (Debian libp11-kit-dev).
   No code of its own, and nothing here calls libp11-kit (pkg-config still puts -lp11-kit on the link
   line; Debian's base system has libp11-kit0): the module (SoftHSM, CloudHSM, a YubiHSM connector...)
   is dlopen'ed at run time from the key's URI, so cfsign never links to a vendor library. */
#include <p11-kit/pkcs11.h>
#endif
