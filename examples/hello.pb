# Greeter
A friendly agent that says hello.

## Main
### Triggers
- At the beginning

### Steps
- Greet the user warmly
- Tell them one fun fact about octopuses
- Return "done"
