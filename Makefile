# gdprcrm build, on PGXS.
#
# The control file is the one source of the version.  Tests run against
# temporary instances configured by test/regress.conf (preload plus a test
# key command), so they never touch a server of yours:
#   make check-regress | check-isolation | check-tap   (after make install)
# test/run does all of it, dependencies included, and prints the summary.

EXTENSION   = gdprcrm
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" $(EXTENSION).control)

MODULE_big  = gdprcrm
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))

# SQL (doc/development.md, "SQL sources and releases").  The install script
# of the current version is assembled from one source per concern,
# src/sql/<concern>.sql, in this order: a concern may use the objects of
# the concerns before it.  A new concern is one more name here.
SQL_CONCERNS = prologue access random keys types blind_index data_guard \
               subject_state consent rights crm crm_api erasure export
SQL_SOURCES  = $(SQL_CONCERNS:%=src/sql/%.sql)
SQL_SCRIPT   = $(EXTENSION)--$(EXTVERSION).sql
#
# Releases.  The install script of every released version is kept frozen
# in src/sql/released/ and never edited: once a version is released, the
# next change sets a new default_version and ships an update script
# src/sql/updates/<from>--<to>.sql, installed as gdprcrm--<from>--<to>.sql.
# The frozen scripts of the other versions are installed, so that CREATE
# EXTENSION ... VERSION reaches them and ALTER EXTENSION ... UPDATE leads
# from them to this one (test/t/012_extension_upgrade.pl checks that the
# result equals a fresh install).  The frozen copy of the current version,
# once released, must equal the assembled script: the build stops
# otherwise, and so does that test.
RELEASED     = $(sort $(wildcard src/sql/released/$(EXTENSION)--*.sql))
UPDATES      = $(sort $(wildcard src/sql/updates/*--*.sql))
DATA         = $(filter-out src/sql/released/$(SQL_SCRIPT),$(RELEASED))
DATA_built   = $(SQL_SCRIPT) $(UPDATES:src/sql/updates/%=$(EXTENSION)--%)

# Warnings are errors by default; WERROR= turns that off for a compiler newer
# than the ones this code is tested with.
WERROR     ?= -Werror
PG_CFLAGS   = -Wall -Wextra $(WERROR)
# PostgreSQL's own headers are not -Wextra clean; reading them as system
# headers keeps every warning on for our code without noise from theirs.
PG_CPPFLAGS = -isystem $(includedir_server)
SHLIB_LINK  = -lsodium

TEST_CONF   = --temp-config=$(srcdir)/test/regress.conf

REGRESS      = setup keyring random_bytes encrypted_types shredding blind_index crm consent tenancy data_guard identify rights export erasure
REGRESS_OPTS = --temp-instance=tmp_regress $(TEST_CONF)

ISOLATION      = nonces shred_visibility key_creation identify_race consent_withdrawal team_membership import_race identify_merge_race erasure_race erasure_stages export_erasure_race
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation --temp-instance=tmp_isolation $(TEST_CONF)

TAP_TESTS    = 1
PROVE_TESTS  = test/t/*.pl

# Assembled scripts of earlier default versions too.
EXTRA_CLEAN = results output_iso tmp_check tmp_regress tmp_isolation regression.diffs regression.out \
              test/bench/nonce_rate $(EXTENSION)--*.sql

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# After the include, which empties it: one line per assertion, so that
# test/run can count them.
PROVE_FLAGS = --verbose

ifeq ($(EXTVERSION),)
$(error could not read default_version from $(EXTENSION).control)
endif
# Every concern has its source, and every source is in the list.
ifneq ($(filter-out $(wildcard $(SQL_SOURCES)),$(SQL_SOURCES)),)
$(error no source for $(filter-out $(wildcard $(SQL_SOURCES)),$(SQL_SOURCES)) (SQL_CONCERNS))
endif
ifneq ($(filter-out $(SQL_SOURCES),$(wildcard src/sql/*.sql)),)
$(error $(filter-out $(SQL_SOURCES),$(wildcard src/sql/*.sql)) not in SQL_CONCERNS)
endif
# The default version is reached from every other release by an update.
$(foreach v,$(DATA:src/sql/released/$(EXTENSION)--%.sql=%),$(if $(wildcard src/sql/updates/$(v)--*.sql),,\
  $(error released $(v) has no update script src/sql/updates/$(v)--*.sql)))

# Concern sources, one blank line apart.  A released script never changes.
ASSEMBLE = awk 'FNR == 1 && NR > 1 { print "" } { print }' $(SQL_SOURCES)
$(SQL_SCRIPT): $(SQL_SOURCES) $(wildcard src/sql/released/$(SQL_SCRIPT))
	$(ASSEMBLE) > $@.tmp
	@if [ -f src/sql/released/$@ ] && ! cmp -s $@.tmp src/sql/released/$@; then \
		echo "$@ differs from src/sql/released/$@, a released version: set a new default_version in $(EXTENSION).control and add an update script (doc/development.md)" >&2; \
		rm -f $@.tmp; exit 1; \
	fi
	mv $@.tmp $@

$(EXTENSION)--%.sql: src/sql/updates/%.sql
	cp $< $@

# Releasing a version: freeze its install script (doc/development.md).
# Never over a release: when the build says the sources differ from it,
# the sources are what must change (or the version).
.PHONY: freeze
freeze:
	@if [ -f src/sql/released/$(SQL_SCRIPT) ]; then \
		echo "$(EXTVERSION) is released already: src/sql/released/$(SQL_SCRIPT) is never rewritten" >&2; exit 1; \
	fi
	$(ASSEMBLE) > src/sql/released/$(SQL_SCRIPT)

# One target per suite so that a failure in one does not hide the others.
.PHONY: check-regress check-isolation check-tap
check-regress:
	$(pg_regress_installcheck) $(REGRESS_OPTS) $(REGRESS)
check-isolation:
	$(pg_isolation_regress_installcheck) $(ISOLATION_OPTS) $(ISOLATION)
check-tap:
	$(prove_installcheck)
