"""servicehub-configure: from nothing to a configured hub by answering questions.

Run on the operator's machine from a checkout. Each module has one job:

- ``roles``: what the roles define (defaults, check patterns, the URIs to register), read from
  this checkout's ``roles/``, never repeated here;
- ``discovery``: fetching and judging the provider's discovery document;
- ``answers``: the answers model, its checks (the daemon's own parser for the apps) and the
  translation to and from Ansible variables;
- ``vault``: Ansible Vault files, with ansible-core's own ``VaultLib``;
- ``files``: what is written (inventory, ``group_vars/hub/main.yml``, the Vault file), the
  record of what was written last, diffs of hand-edited files;
- ``prompt``: asking questions on a terminal until an answer passes its check;
- ``wizard``: the questions, in order; ``cli``: the command line, interactive or not.
"""
