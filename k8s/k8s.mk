# Kubernetes tooling of ordermesh: the Helm chart, the image's Dockerfile lint.
#
# Included from the root Makefile (`include k8s/k8s.mk`) or used alone from the
# repository root (`make -f k8s/k8s.mk k8s-check`). Every variable is K8S_-prefixed
# so that nothing clashes with the including Makefile.
#
#   make k8s-tools   install pinned helm, kubernetes-validate and hadolint into .tools/k8s/
#   make k8s-check   helm lint + template (default and k8s/examples values), strict
#                    validation for Kubernetes 1.29 and 1.33, hadolint Dockerfile
#   make k8s-test    the chart's and the image's pytest suite (tests/k8s) with the workspace's
#                    .venv; the image's tests build its venv and need PostgreSQL
#   make k8s-crd-crosscheck   the rendered custom resources against validators generated
#                    from the upstream CRDs (needs node and npm; downloads them)

# The fragment's own folder, taken before anything else is included.
K8S_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
K8S_ROOT := $(abspath $(K8S_DIR)/..)
K8S_TOOLS_DIR ?= $(K8S_ROOT)/.tools/k8s
K8S_KUBE_VERSIONS ?= 1.29.0 1.33.0
K8S_PYTHON ?= python3
K8S_TEST_PYTHON ?= $(K8S_ROOT)/.venv/bin/python
K8S_STAMP := $(K8S_TOOLS_DIR)/.installed
K8S_TOOL_INPUTS := $(K8S_DIR)/tools/install-tools.sh $(K8S_DIR)/tools/requirements.txt

.PHONY: k8s-tools k8s-check k8s-test k8s-crd-crosscheck

$(K8S_STAMP): $(K8S_TOOL_INPUTS)
	@K8S_PYTHON='$(K8S_PYTHON)' bash '$(K8S_DIR)/tools/install-tools.sh' '$(K8S_TOOLS_DIR)'

k8s-tools: $(K8S_STAMP) ## install the pinned Kubernetes tools into .tools/k8s/

k8s-check: $(K8S_STAMP) ## lint and validate the Helm chart and the Dockerfile
	@K8S_TOOLS_DIR='$(K8S_TOOLS_DIR)' K8S_KUBE_VERSIONS='$(K8S_KUBE_VERSIONS)' \
		bash '$(K8S_DIR)/tools/check.sh'

k8s-test: $(K8S_STAMP) ## the chart's tests (tests/k8s)
	cd '$(K8S_ROOT)' && '$(K8S_TEST_PYTHON)' -m pytest -q tests/k8s

k8s-crd-crosscheck: $(K8S_STAMP) ## custom resources against the upstream CRDs (node, npm)
	@K8S_TOOLS_DIR='$(K8S_TOOLS_DIR)' bash '$(K8S_DIR)/tools/crosscheck-crds.sh'
