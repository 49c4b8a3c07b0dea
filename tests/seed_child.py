"""The seed scenario's first life: x = 10, Say, then the process is killed
(PLAYBOOKS_CRASH_AT picks the moment). Prints each Say it delivers."""

import asyncio
import sys

from playbooks import CheckpointManager, FilesystemCheckpointProvider, StreamingPythonExecutor

CODE = '$x = 10\nawait Say("user", f"x is {$x}")\n$y = $x * 2\nawait Say("user", f"y is {$y}")\n'


async def main(directory: str) -> None:
    async def Say(target: str, text: str) -> None:
        print(text, flush=True)

    manager = CheckpointManager("seed", FilesystemCheckpointProvider(directory))
    executor = StreamingPythonExecutor(None, namespace={"Say": Say}, checkpoint_manager=manager)
    for line in CODE.splitlines(keepends=True):  # streamed line by line
        await executor.add_chunk(line)
    await executor.finalize()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
