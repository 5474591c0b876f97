# Everything installs itself: `make demo` and `make test` work on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libkrb5-dev gcc pkg-config python3-venv slapd ldap-utils libldap2-dev libsasl2-dev openssl postgresql redis-server \
                openjdk-17-jdk-headless maven chromium chromium-driver openssh-server openssh-client
STAMP := $(VENV)/.installed
HADOOP_JAR := build/hadoop/metabackup-hdfs.jar
S3PROXY_VERSION := 4.1.0
S3PROXY_JAR := build/s3proxy/s3proxy-$(S3PROXY_VERSION)-jar-with-dependencies.jar

.PHONY: setup apt venv hadoop s3proxy test unit demo bench bench-quick lock clean

setup: apt $(STAMP) $(HADOOP_JAR) $(S3PROXY_JAR)

# Debian packages (the hdfs provider builds krb5 against libkrb5-dev; python-ldap builds against
# libldap2-dev/libsasl2-dev; slapd and ldap-utils for the LDAP harness; PostgreSQL 15 for the
# PostgreSQL harness; a JDK and Maven for the HDFS harness, NameNodeTool and s3proxy; Chromium and
# its driver for the browser test; OpenSSH's server for the SFTP harness); skipped when present.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  echo "slapd slapd/no_configuration boolean true" | $$( [ $$(id -u) -eq 0 ] || echo sudo ) debconf-set-selections; \
	  $$( [ $$(id -u) -eq 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ $$(id -u) -eq 0 ] || echo sudo ) apt-get install -y -qq $$missing; \
	fi

# Hadoop 3.4 client + minicluster jars from Maven Central, and our NameNodeTool/HdfsCluster jar.
hadoop: $(HADOOP_JAR)
$(HADOOP_JAR): hadoop/pom.xml $(wildcard hadoop/src/main/java/metabackup/hdfs/*.java)
	mvn -q -B -f hadoop/pom.xml package

# An S3 server over real files for the S3/OBS target's tests (org.gaul:s3proxy from Maven Central).
s3proxy: $(S3PROXY_JAR)
$(S3PROXY_JAR):
	mvn -q -B dependency:copy -Dartifact=org.gaul:s3proxy:$(S3PROXY_VERSION):jar:jar-with-dependencies \
	  -DoutputDirectory=build/s3proxy

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --python $(PY) -q -r requirements.txt
	@touch $@

# The suite on two workers (pytest-xdist), whole files per worker: a file's servers and fixtures
# stay in one process; files in the order tests/conftest.py sorts them (deployments first).
# TEST_WORKERS=1 runs it in one process.
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

unit: setup
	$(PY) -m pytest tests/unit

demo: setup
	./scripts/demo.sh

# Every benchmark (bench/README.md), then one summary table of all their goals; bench-quick: smaller
# sizes and fewer rounds (each script's --quick; bench/README.md says what each changes).
bench: setup
	@for p in pgbackrest pigz zstd; do dpkg -s $$p >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p; done
	PYTHONPATH=plugins:. $(PY) bench/run_all.py

bench-quick: setup
	@for p in pgbackrest pigz zstd; do dpkg -s $$p >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p; done
	PYTHONPATH=plugins:. $(PY) bench/run_all.py --quick

# Re-resolve the pins from the direct dependencies.
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install --python $(PY) "apache-airflow==3.3.*" apache-airflow-providers-apache-hdfs \
	  apache-airflow-providers-standard apache-airflow-providers-postgres apache-airflow-providers-openlineage \
	  apache-airflow-providers-sftp apache-airflow-providers-celery "celery<5.7" boto3 pendulum pydantic pyyaml pytest pytest-xdist \
	  python-ldap selenium aiosmtpd import-linter isal zstandard
	{ sed -n '1,3p' requirements.txt; $(VENV)/bin/uv pip freeze --python $(PY); } > requirements.txt.new
	mv requirements.txt.new requirements.txt

clean:
	rm -rf build test-artifacts .pytest_cache
