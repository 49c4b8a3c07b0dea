
## Orphan
### Steps
- This playbook has no agent

# Late agent
## Main
### Steps
- Hello
