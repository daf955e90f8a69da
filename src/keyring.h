/*-------------------------------------------------------------------------
 * keyring.h
 *	  The root key and the purpose keys derived from it.
 *
 * The root key is read once by the postmaster (keyring.c) and inherited by
 * every backend.  Other modules never see it: they ask for the key of one
 * purpose, which is derived from the root with its own context so that a
 * key leaked from one purpose reveals nothing about another.
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_KEYRING_H
#define GDPRCRM_KEYRING_H

#include <stddef.h>

#define KEYRING_KEY_BYTES 32

/* A wrapped key: 24-byte nonce, ciphertext of the key, 16-byte tag. */
#define KEYRING_WRAPPED_BYTES (24 + KEYRING_KEY_BYTES + 16)

/* Root key fingerprints are this many lower-case hex digits. */
#define KEYRING_FINGERPRINT_CHARS 32

typedef enum KeyPurpose
{
	KEY_PURPOSE_WRAP,			/* wraps each subject's data key */
	KEY_PURPOSE_BLIND_INDEX,	/* keyed hashes for equality lookups */
	KEY_PURPOSE_PSEUDONYM,		/* deterministic pseudonyms */
	KEY_PURPOSE_AUDIT,			/* the audit log's hash chain */
	KEY_PURPOSE_COUNT
} KeyPurpose;

extern void keyring_init(void);
extern bool keyring_is_loaded(void);
extern const unsigned char *keyring_purpose_key(KeyPurpose purpose);
extern const char *keyring_fingerprint(void);
extern const char *keyring_previous_fingerprint(void);
extern void keyring_wrap(KeyPurpose purpose, const unsigned char *ad,
						 size_t ad_len, const unsigned char *key,
						 unsigned char *wrapped);
extern void keyring_unwrap(KeyPurpose purpose, const char *fingerprint,
						   const unsigned char *ad, size_t ad_len,
						   const unsigned char *wrapped, size_t wrapped_len,
						   unsigned char *key);

#endif							/* GDPRCRM_KEYRING_H */
