/*-------------------------------------------------------------------------
 * envelope.h
 *	  The ciphertext envelope of gdprcrm's encrypted types (envelope.c).
 *
 * Binary layout, format version 1 (all integers big-endian):
 *
 *	  offset  size  field
 *	  0       1     format version (1)
 *	  1       1     cipher (EnvelopeCipher)
 *	  2       1     kind of plaintext (EnvelopeKind)
 *	  3       1     flags, must be 0
 *	  4       8     subject id
 *	  12      4     version of the subject's data key
 *	  16      n     random nonce: 24 bytes for XChaCha20-Poly1305,
 *	                12 for AES-256-GCM
 *	  16+n    m+16  AEAD ciphertext of m plaintext bytes, then the tag
 *
 * The 16 header bytes are authenticated as associated data together with
 * the caller's context, so no field can be changed without decryption
 * failing.  The text form is ENVELOPE_TEXT_PREFIX followed by the
 * envelope in unpadded URL-safe base64.
 *
 * Pure C: no palloc, no ereport, so that test/fuzz can drive the decoder.
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_ENVELOPE_H
#define GDPRCRM_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENVELOPE_FORMAT_VERSION	1
#define ENVELOPE_HEADER_BYTES	16
#define ENVELOPE_TAG_BYTES		16
#define ENVELOPE_MAX_NONCE_BYTES 24
#define ENVELOPE_TEXT_PREFIX	"gcrm:"
#define ENVELOPE_TEXT_PREFIX_LEN 5

typedef enum EnvelopeCipher
{
	ENVELOPE_CIPHER_XCHACHA20POLY1305 = 1,
	ENVELOPE_CIPHER_AES256GCM = 2
} EnvelopeCipher;

typedef enum EnvelopeKind
{
	ENVELOPE_KIND_ANY = 0,		/* to envelope_decode: accept every kind */
	ENVELOPE_KIND_TEXT = 1,
	ENVELOPE_KIND_JSONB = 2,
	ENVELOPE_KIND_BYTEA = 3
} EnvelopeKind;

typedef enum EnvelopeStatus
{
	ENVELOPE_OK = 0,
	ENVELOPE_TRUNCATED,			/* shorter than header, nonce and tag */
	ENVELOPE_UNKNOWN_VERSION,
	ENVELOPE_UNKNOWN_CIPHER,
	ENVELOPE_UNKNOWN_KIND,
	ENVELOPE_BAD_FLAGS,
	ENVELOPE_WRONG_KIND			/* valid, but for another type */
} EnvelopeStatus;

/* A decoded envelope; pointers point into the buffer that was decoded. */
typedef struct Envelope
{
	EnvelopeCipher cipher;
	EnvelopeKind kind;
	int64_t		subject;
	uint32_t	key_version;
	const uint8_t *header;		/* ENVELOPE_HEADER_BYTES */
	const uint8_t *nonce;
	size_t		nonce_len;
	const uint8_t *sealed;		/* ciphertext followed by the tag */
	size_t		sealed_len;
} Envelope;

extern size_t envelope_nonce_bytes(EnvelopeCipher cipher);
extern size_t envelope_size(EnvelopeCipher cipher, size_t plaintext_len);
extern void envelope_write_header(uint8_t *buf, EnvelopeCipher cipher,
								  EnvelopeKind kind, int64_t subject,
								  uint32_t key_version);
extern EnvelopeStatus envelope_decode(const uint8_t *buf, size_t len,
									  EnvelopeKind expected_kind,
									  Envelope *out);
extern const char *envelope_status_detail(EnvelopeStatus status);

extern bool envelope_text_is_prefixed(const char *text, size_t len);
extern size_t envelope_text_size(size_t bin_len);
extern void envelope_to_text(const uint8_t *bin, size_t bin_len, char *text,
							 size_t text_size);
extern bool envelope_from_text(const char *text, size_t len, uint8_t *bin,
							   size_t bin_size, size_t *bin_len);

#endif							/* GDPRCRM_ENVELOPE_H */
