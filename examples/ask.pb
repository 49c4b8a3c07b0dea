# Host
Welcomes a guest by name.

## Main
### Triggers
- At the beginning

### Steps
- Ask the user for their name and wait for the reply
- Greet the user by name
- Return the name
