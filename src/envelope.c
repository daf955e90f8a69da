/*-------------------------------------------------------------------------
 * envelope.c
 *	  Encode and decode the ciphertext envelope; layout in envelope.h.
 *
 * Decoding checks structure only: version, cipher, kind, flags and that
 * the lengths add up.  Authenticity is the AEAD's job (enctype.c); a
 * structurally valid envelope may still fail to decrypt.
 *
 * Everything here is pure C on caller-provided buffers so that the
 * libFuzzer harness in test/fuzz links this file alone with libsodium.
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include <sodium.h>

#include "big_endian.h"
#include "envelope.h"

/*
 * envelope_nonce_bytes
 *	  Nonce length of a cipher; 0 for a cipher this format does not know.
 */
size_t
envelope_nonce_bytes(EnvelopeCipher cipher)
{
	switch (cipher)
	{
		case ENVELOPE_CIPHER_XCHACHA20POLY1305:
			return crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
		case ENVELOPE_CIPHER_AES256GCM:
			return crypto_aead_aes256gcm_NPUBBYTES;
	}
	return 0;
}

/*
 * envelope_size
 *	  Bytes of the envelope of a plaintext of plaintext_len bytes.
 */
size_t
envelope_size(EnvelopeCipher cipher, size_t plaintext_len)
{
	return ENVELOPE_HEADER_BYTES + envelope_nonce_bytes(cipher) +
		plaintext_len + ENVELOPE_TAG_BYTES;
}

/*
 * envelope_write_header
 *	  Fill the first ENVELOPE_HEADER_BYTES of buf.
 */
void
envelope_write_header(uint8_t *buf, EnvelopeCipher cipher, EnvelopeKind kind,
					  int64_t subject, uint32_t key_version)
{
	buf[0] = ENVELOPE_FORMAT_VERSION;
	buf[1] = (uint8_t) cipher;
	buf[2] = (uint8_t) kind;
	buf[3] = 0;
	big_endian_put(buf + 4, (uint64_t) subject, 8);
	big_endian_put(buf + 12, key_version, 4);
}

/*
 * envelope_decode
 *	  Check the structure of len bytes at buf and describe them in out.
 *	  expected_kind is the kind the caller's type holds, or
 *	  ENVELOPE_KIND_ANY.  Reads nothing
 *	  past buf + len, whatever the input.
 */
EnvelopeStatus
envelope_decode(const uint8_t *buf, size_t len, EnvelopeKind expected_kind,
				Envelope *out)
{
	size_t		nonce_len;

	if (len < ENVELOPE_HEADER_BYTES)
		return ENVELOPE_TRUNCATED;
	if (buf[0] != ENVELOPE_FORMAT_VERSION)
		return ENVELOPE_UNKNOWN_VERSION;
	nonce_len = envelope_nonce_bytes((EnvelopeCipher) buf[1]);
	if (nonce_len == 0)
		return ENVELOPE_UNKNOWN_CIPHER;
	if (buf[2] != ENVELOPE_KIND_TEXT && buf[2] != ENVELOPE_KIND_JSONB &&
		buf[2] != ENVELOPE_KIND_BYTEA)
		return ENVELOPE_UNKNOWN_KIND;
	if (buf[3] != 0)
		return ENVELOPE_BAD_FLAGS;
	if (len < ENVELOPE_HEADER_BYTES + nonce_len + ENVELOPE_TAG_BYTES)
		return ENVELOPE_TRUNCATED;
	if (expected_kind != ENVELOPE_KIND_ANY && buf[2] != (uint8_t) expected_kind)
		return ENVELOPE_WRONG_KIND;

	out->cipher = (EnvelopeCipher) buf[1];
	out->kind = (EnvelopeKind) buf[2];
	out->subject = (int64_t) big_endian_get(buf + 4, 8);
	out->key_version = (uint32_t) big_endian_get(buf + 12, 4);
	out->header = buf;
	out->nonce = buf + ENVELOPE_HEADER_BYTES;
	out->nonce_len = nonce_len;
	out->sealed = buf + ENVELOPE_HEADER_BYTES + nonce_len;
	out->sealed_len = len - ENVELOPE_HEADER_BYTES - nonce_len;
	return ENVELOPE_OK;
}

/*
 * envelope_status_detail
 *	  A sentence describing a decoding failure, for an error detail.
 */
const char *
envelope_status_detail(EnvelopeStatus status)
{
	switch (status)
	{
		case ENVELOPE_OK:
			return "The envelope is valid.";
		case ENVELOPE_TRUNCATED:
			return "The envelope is truncated.";
		case ENVELOPE_UNKNOWN_VERSION:
			return "The envelope has an unknown format version.";
		case ENVELOPE_UNKNOWN_CIPHER:
			return "The envelope names an unknown cipher.";
		case ENVELOPE_UNKNOWN_KIND:
			return "The envelope names an unknown kind of value.";
		case ENVELOPE_BAD_FLAGS:
			return "The envelope has flags this version does not know.";
		case ENVELOPE_WRONG_KIND:
			return "The envelope holds a value of another encrypted type.";
	}
	return "The envelope is invalid.";
}

/*
 * envelope_text_is_prefixed
 *	  Whether text starts like the text form of an envelope.
 */
bool
envelope_text_is_prefixed(const char *text, size_t len)
{
	return len >= ENVELOPE_TEXT_PREFIX_LEN &&
		memcmp(text, ENVELOPE_TEXT_PREFIX, ENVELOPE_TEXT_PREFIX_LEN) == 0;
}

/*
 * envelope_text_size
 *	  Bytes needed for the text form of bin_len bytes, terminator included.
 */
size_t
envelope_text_size(size_t bin_len)
{
	return ENVELOPE_TEXT_PREFIX_LEN +
		sodium_base64_ENCODED_LEN(bin_len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

/*
 * envelope_to_text
 *	  Write the NUL-terminated text form of bin into text, which has
 *	  text_size >= envelope_text_size(bin_len) bytes.
 */
void
envelope_to_text(const uint8_t *bin, size_t bin_len, char *text,
				 size_t text_size)
{
	memcpy(text, ENVELOPE_TEXT_PREFIX, ENVELOPE_TEXT_PREFIX_LEN);
	sodium_bin2base64(text + ENVELOPE_TEXT_PREFIX_LEN,
					  text_size - ENVELOPE_TEXT_PREFIX_LEN, bin, bin_len,
					  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static bool
is_base64url_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') || c == '-' || c == '_';
}

/*
 * envelope_from_text
 *	  Decode the text form into bin (bin_size bytes); false when the text
 *	  lacks the prefix, is not valid base64 or does not fit.
 *
 *	  Every character is checked against the alphabet first: libsodium
 *	  1.0.18's decoder reads bytes above 0x7f as '_', which would let many
 *	  texts stand for one envelope.
 */
bool
envelope_from_text(const char *text, size_t len, uint8_t *bin,
				   size_t bin_size, size_t *bin_len)
{
	const char *end = NULL;

	if (!envelope_text_is_prefixed(text, len))
		return false;
	for (size_t i = ENVELOPE_TEXT_PREFIX_LEN; i < len; i++)
		if (!is_base64url_char(text[i]))
			return false;
	if (sodium_base642bin(bin, bin_size, text + ENVELOPE_TEXT_PREFIX_LEN,
						  len - ENVELOPE_TEXT_PREFIX_LEN, NULL, bin_len, &end,
						  sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
		return false;
	return end == text + len;
}
