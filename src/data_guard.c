/*-------------------------------------------------------------------------
 * data_guard.c
 *	  The data guard: refuse, in CRM properties, data the CRM must not hold:
 *	  payment card numbers and special categories of personal data (GDPR
 *	  Art. 9 and 10).
 *
 * (Not to be confused with the restriction of processing of Art. 18,
 * subject_state.c and consent.c: this is about kinds of data, not about
 * subjects.  The SQL name check_unrestricted() is older than this file's.)
 *
 * gdprcrm.check_unrestricted(jsonb, what) walks a document once and raises
 * ERRCODE_CHECK_VIOLATION at the first problem, naming its JSON path and
 * never its value.  The CRM tables call it from CHECK constraints, so it
 * runs on every write, whoever writes.  The path shows every run of digits
 * in a key as #, and a key that holds a card number as <key>: a refused
 * document's numbers reach no message, and so no server log.
 *
 * Card numbers, in any string, object key or number: digits come in groups
 * (runs of ASCII digits), and a single space or dash between two digits
 * joins their groups into one run.  A card number is a window of whole
 * groups holding 13 to 19 digits, starting with a card network digit (2 to
 * 6) and passing the Luhn check, that is either a whole run, in any layout,
 * or a part of a longer run laid out as cards are written (one group;
 * groups of four, the last of one to four; 4-6-5; 4-6-4) and not starting
 * inside a valid IBAN.  So a card written next to other numbers ("4111 1111
 * 1111 1111 12/27", "5555-5555-5555-4444 123", "qty 2 4111111111111111")
 * is found, not only one that is a run by itself.  The first-digit rule
 * keeps millisecond and microsecond timestamps out (they start with 1
 * until May 2033; seconds are too short), and most identifiers.
 *
 * Where a window may start and end trades misses against false positives,
 * which test/bench/card_false_positives.sh measures (doc/security.md).  At
 * any offset within a run, 82% of 20 digit order ids would be refused (35
 * windows each); so windows start and end at group boundaries only, and a
 * 20 digit id with no separator passes, as would a card glued to other
 * digits with no separator at all, which is rare.  At group boundaries in
 * any layout, a quarter of lists of ids separated by spaces and about one
 * printed IBAN in five would be refused; with the layout rule and the IBAN
 * check, every kind measured is refused as often as when only whole runs
 * were tried, but lists of ids (0.9% instead of 0.5%) and strings shaped
 * like IBANs with wrong check digits.
 *
 * Special categories: an object key naming one, compared word by word
 * ("healthStatus" and "health_status" are the words health, status) with
 * the terms of gdprcrm.special_category_keys ("sexual_orientation" matches
 * the words sexual, orientation in a row).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "compat.h"
#include "guc.h"

#define CARD_MIN_DIGITS 13
#define CARD_MAX_DIGITS 19
#define MAX_WORDS 32
#define MAX_WORD_LEN 64
#define MAX_DEPTH 64

/* One level of the path to the current value. */
typedef struct PathLevel
{
	bool		in_array;
	int			index;			/* next element's index, for arrays */
	const char *key;			/* current key, for objects; not terminated */
	int			key_len;
} PathLevel;

typedef struct Words
{
	int			count;
	char		word[MAX_WORDS][MAX_WORD_LEN];
} Words;

/*
 * split_words
 *	  Lower-case words of a key: split at anything not a letter or digit
 *	  and where a lower-case letter is followed by an upper-case one.
 */
static void
split_words(const char *s, int len, Words *out)
{
	int			cur = 0;

	out->count = 0;
	for (int i = 0; i <= len && out->count < MAX_WORDS; i++)
	{
		unsigned char c = i < len ? (unsigned char) s[i] : 0;
		bool		alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9');
		bool		camel_break = alnum && cur > 0 && c >= 'A' && c <= 'Z' &&
			i > 0 && s[i - 1] >= 'a' && s[i - 1] <= 'z';

		if ((!alnum || camel_break) && cur > 0)
		{
			out->word[out->count][cur] = '\0';
			out->count++;
			cur = 0;
		}
		if (alnum && out->count < MAX_WORDS && cur < MAX_WORD_LEN - 1)
			out->word[out->count][cur++] = (char) ((c >= 'A' && c <= 'Z') ? c + 32 : c);
	}
}

/*
 * special_category_term
 *	  The configured term a key names, or NULL.  The list is short and keys
 *	  are short, so a direct scan is cheaper than any index of it.
 */
static const char *
special_category_term(const char *key, int key_len)
{
	Words		key_words;
	const char *list = gdprcrm_special_category_keys;

	if (list == NULL || *list == '\0')
		return NULL;
	split_words(key, key_len, &key_words);
	if (key_words.count == 0)
		return NULL;

	while (*list)
	{
		const char *end = strchr(list, ',');
		int			term_len = end ? (int) (end - list) : (int) strlen(list);
		Words		term_words;

		split_words(list, term_len, &term_words);
		for (int start = 0; term_words.count > 0 &&
			 start + term_words.count <= key_words.count; start++)
		{
			int			w = 0;

			while (w < term_words.count &&
				   strcmp(key_words.word[start + w], term_words.word[w]) == 0)
				w++;
			if (w == term_words.count)
			{
				/* Report the term as configured, trimmed. */
				while (term_len > 0 && (*list == ' '))
				{
					list++;
					term_len--;
				}
				return pnstrdup(list, term_len);
			}
		}
		if (!end)
			break;
		list = end + 1;
	}
	return NULL;
}

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Whether the character at s[i], after a digit, joins two groups of digits. */
static inline bool
joins_groups(const char *s, int len, int i)
{
	return i + 1 < len && (s[i] == ' ' || s[i] == '-') && is_digit(s[i + 1]);
}

/*
 * card_shaped
 *	  Whether a window of whole groups is laid out as card numbers are
 *	  written: one group, groups of four with a last one of one to four
 *	  (4-4-4-4, 4-4-4-4-3, 4-4-4-1), or 4-6-5 and 4-6-4 (American Express,
 *	  Diners Club).  Lists of ids or dates separated by spaces rarely are,
 *	  and without this test a part of them passing Luhn would refuse them
 *	  many times as often as before (doc/security.md).
 *	  fours: every group before the last one had four digits.
 */
static inline bool
card_shaped(int groups, bool fours, int first_len, int second_len, int last_len)
{
	return groups == 1 || (fours && last_len <= 4) ||
		(groups == 3 && first_len == 4 && second_len == 6 &&
		 (last_len == 5 || last_len == 4));
}

/* Value of a character in the IBAN check: 0 to 9, A (or a) 10 to Z 35; else -1. */
static inline int
iban_value(char c)
{
	if (is_digit(c))
		return c - '0';
	if (c >= 'A' && c <= 'Z')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 10;
	return -1;
}

/* The remainder modulo 97 of a number with one more IBAN character. */
static inline int
mod97_append(int rem, int value)
{
	return (rem * (value < 10 ? 10 : 100) + value) % 97;
}

/*
 * iban_end
 *	  Where a valid IBAN starting at s[p] ends (the index past it), or p.
 *
 * An IBAN (ISO 13616) is two letters, two check digits and 11 to 30
 * letters or digits, written compact or in groups of four separated by
 * single spaces; it is valid when, with its first four characters moved to
 * the end and letters read as 10 to 35, it leaves 1 modulo 97.  A printed
 * IBAN holds groups of four digits, as a card does (DE89 3704 0044 0532
 * 0130 00), and about one printed German IBAN in seven would be refused
 * for a part of it; a valid IBAN is known not to be a card.  At most 34
 * characters and 8 spaces are read.
 */
static int
iban_end(const char *s, int len, int p)
{
	int			rem = 0;
	int			chars = 0;
	int			i = p + 4;
	int			end = p;

	if (p + 4 >= len || (p > 0 && iban_value(s[p - 1]) >= 0) ||
		iban_value(s[p]) < 10 || iban_value(s[p + 1]) < 10 ||
		!is_digit(s[p + 2]) || !is_digit(s[p + 3]))
		return p;

	for (;;)
	{
		int			group = 0;
		bool		complete;

		/* Compact: one run of characters; printed: a space, then four. */
		if (s[p + 4] == ' ')
		{
			if (!(i + 1 < len && s[i] == ' ' && iban_value(s[i + 1]) >= 0))
				break;
			i++;
		}
		while (i < len && iban_value(s[i]) >= 0 && chars <= 30 &&
			   (s[p + 4] != ' ' || group < 4))
		{
			rem = mod97_append(rem, iban_value(s[i]));
			chars++;
			group++;
			i++;
		}
		complete = (i == len || iban_value(s[i]) < 0);
		if (chars > 30 || !complete)
			break;
		if (chars >= 11)
		{
			int			check = rem;

			for (int k = p; k < p + 4; k++)
				check = mod97_append(check, iban_value(s[k]));
			if (check == 1)
				end = i;
		}
		if (s[p + 4] != ' ' || group < 4)
			break;
	}
	return end;
}

/*
 * contains_card_number
 *	  Whether s holds a card number (see the file header).
 *
 * A window starts only at the first digit of a group and ends only at the
 * last digit of one, so the work is bounded per position: from each start
 * at most CARD_MAX_DIGITS + 1 digits (and the separators between them) are
 * read, each group end on the way being a candidate, and from each letter
 * at most one IBAN; a megabyte costs a few tens of steps per character,
 * whatever its layout, never a number of steps growing with its length.
 *
 * The Luhn check doubles every second digit counted from the right end of
 * the window, which is not known while reading from the left; so two sums
 * are kept, one for each parity of the window length, and the one that
 * matches the length at a group end is tested.  No digit is copied.
 */
static bool
contains_card_number(const char *s, int len)
{
	int			iban_until = 0; /* s[..iban_until) ends a valid IBAN */

	for (int start = 0; start < len; start++)
	{
		int			odd_len_sum = 0;	/* Luhn sum if the length is odd */
		int			even_len_sum = 0;	/* Luhn sum if the length is even */
		int			n = 0;
		int			groups = 0;
		int			first_len = 0;
		int			second_len = 0;
		bool		fours = true;	/* every group before the current one had 4 */
		bool		run_start;
		int			i = start;

		if (start >= iban_until && iban_value(s[start]) >= 10)
			iban_until = iban_end(s, len, start);

		/* The first digit of a group, and of a card network. */
		if (!is_digit(s[start]) || (start > 0 && is_digit(s[start - 1])) ||
			s[start] < '2' || s[start] > '6')
			continue;
		run_start = !(start >= 2 && is_digit(s[start - 2]) &&
					  joins_groups(s, len, start - 1));

		for (;;)
		{
			int			group_len = 0;
			bool		run_end;

			while (i < len && is_digit(s[i]) && n <= CARD_MAX_DIGITS)
			{
				int			d = s[i] - '0';
				int			doubled = d * 2 > 9 ? d * 2 - 9 : d * 2;

				/*
				 * Digit n of the window is doubled when an odd number of
				 * digits follow it: for an odd length, when n is odd.
				 */
				odd_len_sum += (n % 2 == 0) ? d : doubled;
				even_len_sum += (n % 2 == 0) ? doubled : d;
				n++;
				i++;
				group_len++;
			}
			if (n > CARD_MAX_DIGITS)
				break;
			groups++;
			if (groups == 1)
				first_len = group_len;
			else if (groups == 2)
				second_len = group_len;
			run_end = !joins_groups(s, len, i);

			/*
			 * A whole run is a card in any layout, as it always was; a part
			 * of a longer run only when laid out as a card, and not inside
			 * a valid IBAN.
			 */
			if (n >= CARD_MIN_DIGITS &&
				((n % 2 == 1) ? odd_len_sum : even_len_sum) % 10 == 0 &&
				((run_start && run_end) ||
				 (start >= iban_until &&
				  card_shaped(groups, fours, first_len, second_len, group_len))))
				return true;
			if (run_end)
				break;
			fours = fours && group_len == 4;
			i++;				/* the separator */
		}
	}
	return false;
}

/*
 * append_key
 *	  Render one object key of a path, every run of digits in it shown as
 *	  #.  A key may be, or hold, part of a card number (or of any number the
 *	  document should not have had), and a path can spread one number over
 *	  several keys; with no digit of any key shown, no message can repeat
 *	  one, wherever it hides.  Words are enough to find the property.
 */
static void
append_key(StringInfo buf, const char *key, int key_len)
{
	StringInfoData shown;
	bool		plain;

	initStringInfo(&shown);
	for (int i = 0; i < key_len; i++)
	{
		if (!is_digit(key[i]))
			appendStringInfoChar(&shown, key[i]);
		else if (i == 0 || !is_digit(key[i - 1]))
			appendStringInfoChar(&shown, '#');
	}

	plain = shown.len > 0;
	for (int i = 0; i < shown.len && plain; i++)
	{
		char		c = shown.data[i];

		plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
	}
	if (plain)
		appendStringInfo(buf, ".%s", shown.data);
	else
	{
		appendStringInfoString(buf, ".\"");
		for (int i = 0; i < shown.len; i++)
		{
			if (shown.data[i] == '"' || shown.data[i] == '\\')
				appendStringInfoChar(buf, '\\');
			appendStringInfoChar(buf, shown.data[i]);
		}
		appendStringInfoChar(buf, '"');
	}
	pfree(shown.data);
}

/*
 * append_path
 *	  Render the JSON path of the current position, as in $.a."b c"[2] (keys
 *	  as append_key shows them); with hide_last_key, the innermost key is
 *	  shown as <key>.  Array indexes are positions, not content, and are
 *	  shown as they are.
 */
static void
append_path(StringInfo buf, const PathLevel *levels, int depth, bool hide_last_key)
{
	appendStringInfoChar(buf, '$');
	for (int d = 0; d < depth; d++)
	{
		const PathLevel *l = &levels[d];

		if (l->in_array)
			appendStringInfo(buf, "[%d]", l->index - 1);
		else if (l->key != NULL && hide_last_key && d == depth - 1)
			appendStringInfoString(buf, ".<key>");
		else if (l->key != NULL)
			append_key(buf, l->key, l->key_len);
	}
}

static void
refuse_card(const char *what, const PathLevel *levels, int depth, bool in_key)
{
	StringInfoData path;

	initStringInfo(&path);
	/* When the number is the key itself, the path must not show it. */
	append_path(&path, levels, depth, in_key);
	ereport(ERROR,
			(errcode(ERRCODE_CHECK_VIOLATION),
			 errmsg("%s at %s looks like a payment card number", what, path.data),
			 errdetail("Payment card numbers must not be stored in the CRM; the value is not shown."),
			 errhint("Store only a token or the last four digits from the payment provider.")));
}

/*
 * gdprcrm.check_unrestricted(value jsonb, what text) -> boolean
 *	  True when value holds nothing the data guard refuses; otherwise raises
 *	  ERRCODE_CHECK_VIOLATION naming what (e.g. "event property") and the
 *	  JSON path, never the value.
 */
PG_FUNCTION_INFO_V1(gdprcrm_check_unrestricted);
Datum
gdprcrm_check_unrestricted(PG_FUNCTION_ARGS)
{
	Jsonb	   *value = PG_GETARG_JSONB_P(0);
	char	   *what = text_to_cstring(PG_GETARG_TEXT_PP(1));
	PathLevel	levels[MAX_DEPTH];
	int			depth = 0;
	JsonbIterator *it = JsonbIteratorInit(&value->root);
	JsonbValue	v;
	JsonbIteratorToken token;

	while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (token)
		{
			case WJB_BEGIN_ARRAY:
			case WJB_BEGIN_OBJECT:
				if (v.type == jbvArray && v.val.array.rawScalar)
					break;
				if (depth > 0 && levels[depth - 1].in_array)
					levels[depth - 1].index++;
				if (depth == MAX_DEPTH)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("%s is nested more than %d levels deep", what, MAX_DEPTH)));
				levels[depth].in_array = (token == WJB_BEGIN_ARRAY);
				levels[depth].index = 0;
				levels[depth].key = NULL;
				levels[depth].key_len = 0;
				depth++;
				break;
			case WJB_END_ARRAY:
			case WJB_END_OBJECT:
				if (depth > 0 && levels[depth - 1].in_array == (token == WJB_END_ARRAY))
					depth--;
				break;
			case WJB_KEY:
				{
					const char *term;

					levels[depth - 1].key = v.val.string.val;
					levels[depth - 1].key_len = v.val.string.len;
					term = special_category_term(v.val.string.val, v.val.string.len);
					if (term != NULL)
					{
						StringInfoData path;

						initStringInfo(&path);
						append_path(&path, levels, depth, false);
						ereport(ERROR,
								(errcode(ERRCODE_CHECK_VIOLATION),
								 errmsg("%s at %s is special-category personal data (%s)",
										what, path.data, term),
								 errdetail("Keys naming a special category of GDPR Art. 9 or 10 are refused; the value is not shown."),
								 errhint("Remove the property, or ask an administrator to review gdprcrm.special_category_keys.")));
					}
					if (contains_card_number(v.val.string.val, v.val.string.len))
						refuse_card(what, levels, depth, true);
					break;
				}
			case WJB_ELEM:
				if (depth > 0 && levels[depth - 1].in_array)
					levels[depth - 1].index++;
				/* FALLTHROUGH */
			case WJB_VALUE:
				if (v.type == jbvString &&
					contains_card_number(v.val.string.val, v.val.string.len))
					refuse_card(what, levels, depth, false);
				else if (v.type == jbvNumeric)
				{
					char	   *digits = DatumGetCString(DirectFunctionCall1(numeric_out,
																			 NumericGetDatum(v.val.numeric)));

					if (contains_card_number(digits, strlen(digits)))
						refuse_card(what, levels, depth, false);
					pfree(digits);
				}
				break;
			default:
				break;
		}
	}
	PG_RETURN_BOOL(true);
}
