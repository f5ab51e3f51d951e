"""The live path: sockets, and how events reach them.

    consumers.py   InboxConsumer, RoomConsumer: admit, parse client frames, relay events
    hub.py         RoomHub: one room-group subscription per process, fanned out to its sockets
    mailbox.py     new messages to the room at once, inbox counts merged per person and second
    sends.py       socket sends stored in groups, one transaction each; "busy" past capacity
    writer.py      a room socket's frames, written by a task that runs only while some wait (4008 past the bound)
    presence.py    who is online in a room, counted the same way by every process
    read_marks.py  read marks from room sockets, written in batches
    loop.py        handing work to the server's event loop; per-loop instances and tasks
    database.py    the sockets' trips to the database thread (an SQLite connection kept between them)

The event vocabulary, group names and frame builders are in `chat.events`; every write
is in `chat.services`.
"""
