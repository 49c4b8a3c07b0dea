# Greeter
Greets a person by the name another playbook asked for.

## Main
### Triggers
- At the beginning

### Steps
- Ask the user's name and keep it in $name
- Greet them with Greet
- Tell them whether they were greeted
- Return the name

## Greet($style)
### Steps
- Greet $name in the given style
- Remember that the user was greeted in $greeted
- Return
