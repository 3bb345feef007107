package main

// The adapter kinds this binary offers; each registers itself in init.
import (
	_ "github.com/vigd/vigd/adapters/httpingest"
	_ "github.com/vigd/vigd/adapters/iridium/directip"
	_ "github.com/vigd/vigd/adapters/iridium/rockblock"
	_ "github.com/vigd/vigd/adapters/iridium/sbdmail"
	_ "github.com/vigd/vigd/adapters/mqtt"
	_ "github.com/vigd/vigd/adapters/orbcomm"
	_ "github.com/vigd/vigd/adapters/serial"
	_ "github.com/vigd/vigd/adapters/tcp"
)
