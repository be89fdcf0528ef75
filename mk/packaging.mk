# Mesh rollout packaging (issue 14). Included by the Makefile.
#
#   make oci            dist/huntgate.wasm as an OCI image ("compat" variant: one
#                       tar+gzip layer holding plugin.wasm, annotation
#                       module.wasm.image/variant=compat): $(OCI_OUT)/huntgate-wasm/
#                       (image layout) and $(OCI_OUT)/huntgate-wasm.oci.tar; prints
#                       the manifest digest (WasmPlugin url @sha256:, spec.sha256)
#   make packaging      the packaging checks (run by make test): the image built twice
#                       gives the same bytes, pushed to a real registry on loopback and
#                       pulled back by digest; every Kustomize overlay rendered and
#                       validated against Kubernetes' and Istio's schemas. (Each
#                       overlay's pluginConfig in real Envoy: tests/tests/e2e/packaging.rs,
#                       run by make e2e.)
#   make oci-governor   the governor as a static musl binary in a scratch image layer
#                       (user 65532), checked the same way; slow (a release build of
#                       the governor and librdkafka for x86_64-unknown-linux-musl), so
#                       not part of make test
#
# Tools: scripts/install-packaging-tools.sh (skopeo, umoci, docker-registry, musl-tools,
# kubernetes-validate in $(CACHE)/venv-k8s). The images are written by
# scripts/oci-image.py (Python standard library only; no container engine).
.PHONY: oci oci-check oci-governor packaging packaging-tools deploy-check

OCI_OUT ?= oci-out
OCI_REPO ?= veltrix/huntgate
OCI_TAG ?= $(shell awk -F'"' '/^version = / {print $$2; exit}' Cargo.toml)
# The compat variant (see docs/rollout.md, "The filter image"); os/arch say what the
# module is (Go's names for WASI preview 1), nothing in Istio's fetcher reads them.
OCI_WASM_ARGS = --ref $(OCI_TAG) --file $(WASM):plugin.wasm \
	--manifest-annotation module.wasm.image/variant=compat \
	--manifest-annotation org.opencontainers.image.title=huntgate \
	--os wasip1 --arch wasm
K8S_PYTHON := $(CACHE)/venv-k8s/bin/python

packaging-tools:
	scripts/install-packaging-tools.sh

oci: wasm
	mkdir -p $(OCI_OUT)
	scripts/oci-image.py --layout $(OCI_OUT)/huntgate-wasm --archive $(OCI_OUT)/huntgate-wasm.oci.tar \
		$(OCI_WASM_ARGS) > $(OCI_OUT)/huntgate-wasm.digest
	@echo "huntgate wasm image: $(OCI_OUT)/huntgate-wasm (layout), $(OCI_OUT)/huntgate-wasm.oci.tar ($$(stat -c %s $(OCI_OUT)/huntgate-wasm.oci.tar) bytes)"
	@echo "digest: $$(cat $(OCI_OUT)/huntgate-wasm.digest)"
	@echo "  WasmPlugin: url: oci://<registry>/$(OCI_REPO)@$$(cat $(OCI_OUT)/huntgate-wasm.digest)"
	@echo "              (or a tag, with sha256: $$(cut -d: -f2 $(OCI_OUT)/huntgate-wasm.digest))"

# Same input, same bytes: a second build into a temporary directory, from a copy of the
# module with another path and mtime, under another umask and time zone, must give the
# same digest and a byte-identical archive; then the registry round trip.
oci-check: oci packaging-tools
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	cp $(WASM) $$tmp/copy.wasm && touch -d '2001-02-03 04:05:06' $$tmp/copy.wasm && \
	again=$$(umask 077 && TZ=Pacific/Kiritimati scripts/oci-image.py --layout $$tmp/layout \
		--archive $$tmp/image.oci.tar $(subst $(WASM):,$$tmp/copy.wasm:,$(OCI_WASM_ARGS))) && \
	if [ "$$again" != "$$(cat $(OCI_OUT)/huntgate-wasm.digest)" ] || ! cmp -s $$tmp/image.oci.tar $(OCI_OUT)/huntgate-wasm.oci.tar; then \
		echo "FAILED   reproducible: a second build gave $$again, not $$(cat $(OCI_OUT)/huntgate-wasm.digest)" >&2; exit 1; \
	fi && echo "ok       reproducible: built twice (a copy with another path and mtime, umask 077, another TZ): same digest $$again, identical archive"
	scripts/check-oci.py --layout $(OCI_OUT)/huntgate-wasm --archive $(OCI_OUT)/huntgate-wasm.oci.tar \
		--ref $(OCI_TAG) --repo $(OCI_REPO) --expect plugin.wasm=$(WASM) \
		--annotation module.wasm.image/variant=compat

deploy-check: packaging-tools
	$(K8S_PYTHON) scripts/check-deploy.py

packaging: oci-check deploy-check

# --- the governor image (not in make test) -------------------------------------------
MUSL_TARGET := x86_64-unknown-linux-musl
GOVERNOR_TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
GOVERNOR_MUSL := $(GOVERNOR_TARGET_DIR)/$(MUSL_TARGET)/release/huntgate-governor
GOVERNOR_REPO ?= veltrix/huntgate-governor
# librdkafka's CMake project also probes a C++ compiler (for its C++ wrapper, which
# rdkafka-sys never links): Debian's musl-tools has only musl-gcc, so g++ answers
# that probe. Its <curl/curl.h> include (see install-governor-tools.sh) comes from
# the libcurl headers, which musl-gcc does not search: a directory with just that
# link is added.
MUSL_SHIM := $(GOVERNOR_TARGET_DIR)/musl-shim-include
OCI_GOVERNOR_ARGS = --ref $(OCI_TAG) --file $(GOVERNOR_MUSL):huntgate-governor:0755 \
	--file deploy/governor-image/passwd:etc/passwd --file deploy/governor-image/group:etc/group \
	--manifest-annotation org.opencontainers.image.title=huntgate-governor \
	--user 65532:65532 --entrypoint '["/huntgate-governor"]' \
	--cmd '["serve","--policies","/etc/huntgate/policies"]' --env HUNTGATE_LISTEN=0.0.0.0:9911

oci-governor: packaging-tools
	rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)
	mkdir -p $(MUSL_SHIM)
	curl_h=$$(find /usr/include -path '*/curl/curl.h' -print -quit) && [ -n "$$curl_h" ] && \
		ln -sfn "$$(dirname "$$curl_h")" $(MUSL_SHIM)/curl
	CC_x86_64_unknown_linux_musl=musl-gcc CXX_x86_64_unknown_linux_musl=g++ \
		CFLAGS_x86_64_unknown_linux_musl="-I$(abspath $(MUSL_SHIM))" \
		cargo build --release --locked --target $(MUSL_TARGET) -p huntgate-governor
	@! readelf -l $(GOVERNOR_MUSL) | grep -q 'program interpreter' && ! readelf -d $(GOVERNOR_MUSL) | grep -q NEEDED || \
		{ echo "$(GOVERNOR_MUSL) is not a static binary" >&2; exit 1; }
	mkdir -p $(OCI_OUT)
	scripts/oci-image.py --layout $(OCI_OUT)/huntgate-governor --archive $(OCI_OUT)/huntgate-governor.oci.tar \
		$(OCI_GOVERNOR_ARGS) > $(OCI_OUT)/huntgate-governor.digest
	scripts/check-oci.py --layout $(OCI_OUT)/huntgate-governor --archive $(OCI_OUT)/huntgate-governor.oci.tar \
		--ref $(OCI_TAG) --repo $(GOVERNOR_REPO) --expect huntgate-governor=$(GOVERNOR_MUSL) --user 65532:65532 \
		--run 'huntgate-governor --version'
	@echo "huntgate-governor image: $(OCI_OUT)/huntgate-governor (layout), $(OCI_OUT)/huntgate-governor.oci.tar ($$(stat -c %s $(OCI_OUT)/huntgate-governor.oci.tar) bytes)"
	@echo "digest: $$(cat $(OCI_OUT)/huntgate-governor.digest)"
	@echo "  Deployment: image: <registry>/$(GOVERNOR_REPO)@$$(cat $(OCI_OUT)/huntgate-governor.digest)"
