# Greeter
A friendly agent that says hello to the person running the program.

## Main
### Triggers
- At the beginning

### Steps
- Say hello to the user and ask for their $name
- Greet the user by $name
- End program
