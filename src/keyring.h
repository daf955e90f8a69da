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

#define KEYRING_KEY_BYTES 32

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

#endif							/* GDPRCRM_KEYRING_H */
