# Launcher
Counts down to a launch.

## Main
### Triggers
- At the beginning

### Steps
- Count down from 3, saying each number
- Say "Liftoff!"
- Return the final count
