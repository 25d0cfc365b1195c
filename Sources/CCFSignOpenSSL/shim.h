#ifndef CCFSIGN_OPENSSL_SHIM_H
#define CCFSIGN_OPENSSL_SHIM_H
/* The OpenSSL libcrypto headers cfsign uses; no code of its own. */
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/opensslv.h>
#endif
