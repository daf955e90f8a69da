/*-------------------------------------------------------------------------
 * enctype.c
 *	  The encrypted column types: I/O, encrypt, decrypt, is_erased.
 *
 * encrypted_text, encrypted_jsonb and encrypted_bytea store the ciphertext
 * envelope described in envelope.h and nothing else.  Their text form is
 * the envelope in base64 behind a clear prefix and their binary form the
 * envelope's bytes, so pg_dump, restore and COPY move ciphertext without
 * any key, and a restore can never encrypt twice.  Input checks structure
 * and refuses plaintext without echoing it.
 *
 * Encryption binds each value to its subject and to a caller-chosen
 * context such as 'crm.people.email': the associated data is the envelope
 * header (which names the subject, key version, cipher and kind) followed
 * by the context.  A value copied to another subject, column or table
 * fails to decrypt there with ERRCODE_DATA_CORRUPTED, and no message says
 * more than that.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sodium.h>

#include "fmgr.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "compat.h"
#include "csprng.h"
#include "envelope.h"
#include "guc.h"
#include "subject_keys.h"

/* Contexts are short names; this bounds the associated data on the stack. */
#define CONTEXT_MAX_BYTES 255

static const char *
kind_type_name(EnvelopeKind kind)
{
	switch (kind)
	{
		case ENVELOPE_KIND_TEXT:
			return "encrypted_text";
		case ENVELOPE_KIND_JSONB:
			return "encrypted_jsonb";
		case ENVELOPE_KIND_BYTEA:
			return "encrypted_bytea";
		case ENVELOPE_KIND_ANY:
			break;
	}
	return "encrypted value";
}

/*
 * validate_envelope
 *	  Raise ERRCODE_INVALID_TEXT_REPRESENTATION unless len bytes at bin are
 *	  a structurally valid envelope of the given kind.
 */
static void
validate_envelope(const uint8_t *bin, size_t len, EnvelopeKind kind)
{
	Envelope	env;
	EnvelopeStatus status = envelope_decode(bin, len, kind, &env);

	if (status != ENVELOPE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input for type %s", kind_type_name(kind)),
				 errdetail_internal("%s", envelope_status_detail(status))));
}

static Datum
envelope_in(const char *str, EnvelopeKind kind)
{
	size_t		len = strlen(str);
	size_t		bin_len = 0;
	bytea	   *result;

	if (!envelope_text_is_prefixed(str, len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input for type %s", kind_type_name(kind)),
				 errdetail("The value is not a gdprcrm ciphertext envelope; an encrypted column does not accept plaintext."),
				 errhint("Encrypt the value with gdprcrm.encrypt(subject, value, context).")));

	result = palloc(VARHDRSZ + len);
	if (!envelope_from_text(str, len, (uint8_t *) VARDATA(result), len, &bin_len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input for type %s", kind_type_name(kind)),
				 errdetail("The envelope is not valid unpadded URL-safe base64.")));
	validate_envelope((const uint8_t *) VARDATA(result), bin_len, kind);
	SET_VARSIZE(result, VARHDRSZ + bin_len);
	PG_RETURN_BYTEA_P(result);
}

static Datum
envelope_recv(StringInfo buf, EnvelopeKind kind)
{
	int			len = buf->len - buf->cursor;
	bytea	   *result = palloc(VARHDRSZ + len);

	SET_VARSIZE(result, VARHDRSZ + len);
	pq_copymsgbytes(buf, VARDATA(result), len);
	validate_envelope((const uint8_t *) VARDATA(result), len, kind);
	PG_RETURN_BYTEA_P(result);
}

static Datum
envelope_out(bytea *value)
{
	size_t		len = VARSIZE_ANY_EXHDR(value);
	size_t		size = envelope_text_size(len);
	char	   *text = palloc(size);

	envelope_to_text((const uint8_t *) VARDATA_ANY(value), len, text, size);
	PG_RETURN_CSTRING(text);
}

static Datum
envelope_send(bytea *value)
{
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbytes(&buf, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

PG_FUNCTION_INFO_V1(gdprcrm_encrypted_text_in);
Datum
gdprcrm_encrypted_text_in(PG_FUNCTION_ARGS)
{
	return envelope_in(PG_GETARG_CSTRING(0), ENVELOPE_KIND_TEXT);
}

PG_FUNCTION_INFO_V1(gdprcrm_encrypted_jsonb_in);
Datum
gdprcrm_encrypted_jsonb_in(PG_FUNCTION_ARGS)
{
	return envelope_in(PG_GETARG_CSTRING(0), ENVELOPE_KIND_JSONB);
}

PG_FUNCTION_INFO_V1(gdprcrm_encrypted_bytea_in);
Datum
gdprcrm_encrypted_bytea_in(PG_FUNCTION_ARGS)
{
	return envelope_in(PG_GETARG_CSTRING(0), ENVELOPE_KIND_BYTEA);
}

PG_FUNCTION_INFO_V1(gdprcrm_encrypted_text_recv);
Datum
gdprcrm_encrypted_text_recv(PG_FUNCTION_ARGS)
{
	return envelope_recv((StringInfo) PG_GETARG_POINTER(0), ENVELOPE_KIND_TEXT);
}

PG_FUNCTION_INFO_V1(gdprcrm_encrypted_jsonb_recv);
Datum
gdprcrm_encrypted_jsonb_recv(PG_FUNCTION_ARGS)
{
	return envelope_recv((StringInfo) PG_GETARG_POINTER(0), ENVELOPE_KIND_JSONB);
}

PG_FUNCTION_INFO_V1(gdprcrm_encrypted_bytea_recv);
Datum
gdprcrm_encrypted_bytea_recv(PG_FUNCTION_ARGS)
{
	return envelope_recv((StringInfo) PG_GETARG_POINTER(0), ENVELOPE_KIND_BYTEA);
}

/* Output is the same for every kind: the envelope knows its own. */
PG_FUNCTION_INFO_V1(gdprcrm_encrypted_out);
Datum
gdprcrm_encrypted_out(PG_FUNCTION_ARGS)
{
	return envelope_out(PG_GETARG_BYTEA_PP(0));
}

PG_FUNCTION_INFO_V1(gdprcrm_encrypted_send);
Datum
gdprcrm_encrypted_send(PG_FUNCTION_ARGS)
{
	return envelope_send(PG_GETARG_BYTEA_PP(0));
}

static void
check_context(text *context)
{
	size_t		context_len = VARSIZE_ANY_EXHDR(context);

	if (context_len == 0 || context_len > CONTEXT_MAX_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("encryption context must be between 1 and %d bytes",
						CONTEXT_MAX_BYTES)));
}

/*
 * build_ad
 *	  Associated data: the envelope header, then the context (already
 *	  checked).  Returns its length; ad has room for ENVELOPE_HEADER_BYTES +
 *	  CONTEXT_MAX_BYTES.
 */
static size_t
build_ad(const uint8_t *header, text *context, unsigned char *ad)
{
	size_t		context_len = VARSIZE_ANY_EXHDR(context);

	memcpy(ad, header, ENVELOPE_HEADER_BYTES);
	memcpy(ad + ENVELOPE_HEADER_BYTES, VARDATA_ANY(context), context_len);
	return ENVELOPE_HEADER_BYTES + context_len;
}

static void
require_cipher_here(EnvelopeCipher cipher, EnvelopeKind kind)
{
	if (cipher == ENVELOPE_CIPHER_AES256GCM && !crypto_aead_aes256gcm_is_available())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("this server cannot decrypt a value of type %s encrypted with AES-256-GCM",
						kind_type_name(kind)),
				 errdetail("The CPU has no AES instructions, which AES-256-GCM needs here.")));
}

/*
 * seal
 *	  Encrypt len bytes at plain for subject under context into a new
 *	  envelope of the given kind, in the current memory context.
 */
static bytea *
seal(int64 subject, EnvelopeKind kind, const char *plain, size_t len,
	 text *context)
{
	EnvelopeCipher cipher = (EnvelopeCipher) gdprcrm_cipher;
	size_t		nonce_len = envelope_nonce_bytes(cipher);
	size_t		size = envelope_size(cipher, len);
	unsigned char ad[ENVELOPE_HEADER_BYTES + CONTEXT_MAX_BYTES];
	size_t		ad_len;
	const unsigned char *key;
	uint32		version;
	bytea	   *result;
	uint8_t    *env;

	if (size > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value is too large to encrypt")));
	check_context(context);
	require_cipher_here(cipher, kind);

	result = palloc(VARHDRSZ + size);
	SET_VARSIZE(result, VARHDRSZ + size);
	env = (uint8_t *) VARDATA(result);

	/* The key points into the cache: fetch it last, use it at once. */
	key = subject_keys_for_encrypt(subject, &version);
	envelope_write_header(env, cipher, kind, subject, version);
	ad_len = build_ad(env, context, ad);
	csprng_fill(env + ENVELOPE_HEADER_BYTES, nonce_len);

	if (cipher == ENVELOPE_CIPHER_AES256GCM)
		crypto_aead_aes256gcm_encrypt(env + ENVELOPE_HEADER_BYTES + nonce_len, NULL,
									  (const unsigned char *) plain, len,
									  ad, ad_len, NULL,
									  env + ENVELOPE_HEADER_BYTES, key);
	else
		crypto_aead_xchacha20poly1305_ietf_encrypt(env + ENVELOPE_HEADER_BYTES + nonce_len, NULL,
												   (const unsigned char *) plain, len,
												   ad, ad_len, NULL,
												   env + ENVELOPE_HEADER_BYTES, key);
	return result;
}

/*
 * open_envelope
 *	  Decrypt value into a new buffer of prefix + plaintext + suffix bytes
 *	  (plaintext at offset prefix), returned in *buf with the plaintext
 *	  length in *len.  With expected_subject, the value must belong to that
 *	  subject.  Returns false for a value of an erased or trashed subject
 *	  (or raises, under gdprcrm.strict_erasure).  Any other failure raises
 *	  ERRCODE_DATA_CORRUPTED with a message that names no value or subject.
 */
static bool
open_envelope(bytea *value, EnvelopeKind kind, text *context,
			  const int64 *expected_subject, size_t prefix, size_t suffix,
			  char **buf, size_t *len)
{
	const uint8_t *bin = (const uint8_t *) VARDATA_ANY(value);
	size_t		bin_len = VARSIZE_ANY_EXHDR(value);
	unsigned char ad[ENVELOPE_HEADER_BYTES + CONTEXT_MAX_BYTES];
	size_t		ad_len;
	const unsigned char *key;
	bool		erased;
	Envelope	env;
	char	   *out;
	int			rc;

	check_context(context);
	if (envelope_decode(bin, bin_len, kind, &env) != ENVELOPE_OK ||
		(expected_subject != NULL && env.subject != *expected_subject))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decrypt value of type %s", kind_type_name(kind)),
				 errdetail("The value was altered, or it belongs to another subject or context.")));
	ad_len = build_ad(env.header, context, ad);
	require_cipher_here(env.cipher, kind);

	out = palloc(prefix + env.sealed_len - ENVELOPE_TAG_BYTES + suffix);
	key = subject_keys_for_decrypt(env.subject, env.key_version, &erased);
	if (erased)
	{
		pfree(out);
		if (gdprcrm_strict_erasure)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("value of type %s belongs to an erased subject", kind_type_name(kind)),
					 errdetail("The subject's data key was destroyed; the value can never be decrypted."),
					 errhint("Set gdprcrm.strict_erasure to off to read such values as NULL.")));
		return false;
	}
	if (key == NULL)
	{
		/* In the trash: withheld from a role that is not a superuser. */
		pfree(out);
		if (gdprcrm_strict_erasure)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("value of type %s belongs to a subject in the trash", kind_type_name(kind)),
					 errdetail("Until the subject is restored, only a superuser decrypts its values."),
					 errhint("Set gdprcrm.strict_erasure to off to read such values as NULL.")));
		return false;
	}

	if (env.cipher == ENVELOPE_CIPHER_AES256GCM)
		rc = crypto_aead_aes256gcm_decrypt((unsigned char *) out + prefix, NULL, NULL,
										   env.sealed, env.sealed_len,
										   ad, ad_len, env.nonce, key);
	else
		rc = crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *) out + prefix, NULL, NULL,
														env.sealed, env.sealed_len,
														ad, ad_len, env.nonce, key);
	if (rc != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("could not decrypt value of type %s", kind_type_name(kind)),
				 errdetail("The value was altered, or it belongs to another subject or context.")));

	*buf = out;
	*len = env.sealed_len - ENVELOPE_TAG_BYTES;
	return true;
}

/*
 * refuse_envelope_as_plaintext
 *	  Encrypting an envelope would hide a ciphertext inside a ciphertext,
 *	  which is always a mistake (a value read back without decrypting).
 */
static void
refuse_envelope_as_plaintext(const char *plain, size_t len)
{
	uint8_t    *bin;
	size_t		bin_len;
	Envelope	env;
	bool		is_envelope;

	if (!envelope_text_is_prefixed(plain, len))
		return;
	bin = palloc(len);
	is_envelope = envelope_from_text(plain, len, bin, len, &bin_len) &&
		envelope_decode(bin, bin_len, ENVELOPE_KIND_ANY, &env) == ENVELOPE_OK;
	pfree(bin);
	if (is_envelope)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("value is already encrypted"),
				 errhint("Store the envelope as it is, or decrypt it first.")));
}

/*
 * gdprcrm.encrypt(subject bigint, value text, context text) -> encrypted_text
 */
PG_FUNCTION_INFO_V1(gdprcrm_encrypt_text);
Datum
gdprcrm_encrypt_text(PG_FUNCTION_ARGS)
{
	int64		subject = PG_GETARG_INT64(0);
	text	   *value = PG_GETARG_TEXT_PP(1);
	text	   *context = PG_GETARG_TEXT_PP(2);

	refuse_envelope_as_plaintext(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
	PG_RETURN_BYTEA_P(seal(subject, ENVELOPE_KIND_TEXT, VARDATA_ANY(value),
						   VARSIZE_ANY_EXHDR(value), context));
}

/*
 * gdprcrm.encrypt(subject bigint, value jsonb, context text) -> encrypted_jsonb
 *	  The plaintext is jsonb's canonical text form.
 */
PG_FUNCTION_INFO_V1(gdprcrm_encrypt_jsonb);
Datum
gdprcrm_encrypt_jsonb(PG_FUNCTION_ARGS)
{
	int64		subject = PG_GETARG_INT64(0);
	Jsonb	   *value = PG_GETARG_JSONB_P(1);
	text	   *context = PG_GETARG_TEXT_PP(2);
	char	   *plain = JsonbToCString(NULL, &value->root, VARSIZE(value));
	bytea	   *result = seal(subject, ENVELOPE_KIND_JSONB, plain, strlen(plain), context);

	pfree(plain);
	PG_RETURN_BYTEA_P(result);
}

/*
 * gdprcrm.encrypt(subject bigint, value bytea, context text) -> encrypted_bytea
 */
PG_FUNCTION_INFO_V1(gdprcrm_encrypt_bytea);
Datum
gdprcrm_encrypt_bytea(PG_FUNCTION_ARGS)
{
	int64		subject = PG_GETARG_INT64(0);
	bytea	   *value = PG_GETARG_BYTEA_PP(1);
	text	   *context = PG_GETARG_TEXT_PP(2);

	PG_RETURN_BYTEA_P(seal(subject, ENVELOPE_KIND_BYTEA, VARDATA_ANY(value),
						   VARSIZE_ANY_EXHDR(value), context));
}

/* Arguments of every decrypt: (value, context [, subject]). */
static const int64 *
expected_subject_arg(FunctionCallInfo fcinfo, int64 *storage)
{
	if (PG_NARGS() < 3)
		return NULL;
	*storage = PG_GETARG_INT64(2);
	return storage;
}

/* Text and bytea share a layout, so both decrypt straight into a varlena. */
static Datum
decrypt_varlena(FunctionCallInfo fcinfo, EnvelopeKind kind)
{
	int64		subject;
	char	   *buf;
	size_t		len;

	if (!open_envelope(PG_GETARG_BYTEA_PP(0), kind, PG_GETARG_TEXT_PP(1),
					   expected_subject_arg(fcinfo, &subject),
					   VARHDRSZ, 0, &buf, &len))
		PG_RETURN_NULL();
	SET_VARSIZE(buf, VARHDRSZ + len);
	PG_RETURN_POINTER(buf);
}

/*
 * gdprcrm.decrypt(value encrypted_text, context text [, subject bigint]) -> text
 *	  NULL for a value of an erased subject.
 */
PG_FUNCTION_INFO_V1(gdprcrm_decrypt_text);
Datum
gdprcrm_decrypt_text(PG_FUNCTION_ARGS)
{
	return decrypt_varlena(fcinfo, ENVELOPE_KIND_TEXT);
}

/*
 * gdprcrm.decrypt(value encrypted_bytea, context text [, subject bigint]) -> bytea
 */
PG_FUNCTION_INFO_V1(gdprcrm_decrypt_bytea);
Datum
gdprcrm_decrypt_bytea(PG_FUNCTION_ARGS)
{
	return decrypt_varlena(fcinfo, ENVELOPE_KIND_BYTEA);
}

/*
 * gdprcrm.decrypt(value encrypted_jsonb, context text [, subject bigint]) -> jsonb
 */
PG_FUNCTION_INFO_V1(gdprcrm_decrypt_jsonb);
Datum
gdprcrm_decrypt_jsonb(PG_FUNCTION_ARGS)
{
	int64		subject;
	char	   *buf;
	size_t		len;
	Datum		result;

	if (!open_envelope(PG_GETARG_BYTEA_PP(0), ENVELOPE_KIND_JSONB,
					   PG_GETARG_TEXT_PP(1), expected_subject_arg(fcinfo, &subject),
					   0, 1, &buf, &len))
		PG_RETURN_NULL();
	buf[len] = '\0';
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(buf));
	pfree(buf);
	PG_RETURN_DATUM(result);
}

static bool
value_is_erased(bytea *value)
{
	Envelope	env;
	EnvelopeStatus status = envelope_decode((const uint8_t *) VARDATA_ANY(value),
											VARSIZE_ANY_EXHDR(value),
											ENVELOPE_KIND_ANY, &env);

	if (status != ENVELOPE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("value is not a valid gdprcrm envelope"),
				 errdetail_internal("%s", envelope_status_detail(status))));
	return subject_keys_is_destroyed(env.subject);
}

/*
 * gdprcrm.is_erased(value encrypted_text | encrypted_jsonb | encrypted_bytea) -> boolean
 *	  Whether the value's subject was erased (its data key destroyed).
 */
PG_FUNCTION_INFO_V1(gdprcrm_is_erased);
Datum
gdprcrm_is_erased(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(value_is_erased(PG_GETARG_BYTEA_PP(0)));
}
