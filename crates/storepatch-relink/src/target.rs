//! Which ELF files can be loaded together: class, machine and OS ABI.
use storepatch_elf::{ElfClass, ElfInfo};

/// `EI_OSABI` of System V, which is compatible with every other ABI.
const OS_ABI_SYSV: u8 = 0;

/// The kind of process a file is loaded into: word size, machine and OS ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// Word size.
    pub class: ElfClass,
    /// `e_machine`.
    pub machine: u16,
    /// `EI_OSABI`.
    pub os_abi: u8,
}

impl Target {
    /// The target of an ELF file.
    pub fn of(info: &ElfInfo) -> Self {
        Self {
            class: info.class,
            machine: info.machine,
            os_abi: info.os_abi,
        }
    }

    /// The machine this program was built for (System V ABI), for when no interpreter is known.
    pub fn host() -> Self {
        let (class, machine) = match std::env::consts::ARCH {
            "x86" => (ElfClass::Elf32, 3),
            "arm" => (ElfClass::Elf32, 40),
            "aarch64" => (ElfClass::Elf64, 183),
            "powerpc64" => (ElfClass::Elf64, 21),
            "s390x" => (ElfClass::Elf64, 22),
            "riscv64" => (ElfClass::Elf64, 243),
            "loongarch64" => (ElfClass::Elf64, 258),
            _ => (ElfClass::Elf64, 62),
        };
        Self {
            class,
            machine,
            os_abi: OS_ABI_SYSV,
        }
    }

    /// Same class and machine.
    pub fn same_architecture(&self, other: &Self) -> bool {
        self.class == other.class && self.machine == other.machine
    }

    /// Whether a library of target `library` may satisfy a dependency of a file of this target:
    /// same class and machine, and OS ABIs that are equal or System V on either side (as
    /// autoPatchelfHook decides).
    pub fn accepts(&self, library: &Self) -> bool {
        self.same_architecture(library)
            && (self.os_abi == library.os_abi
                || self.os_abi == OS_ABI_SYSV
                || library.os_abi == OS_ABI_SYSV)
    }

    /// Human name of the machine, such as `x86-64`.
    pub fn machine_name(&self) -> String {
        let name = match self.machine {
            3 => "i386",
            8 => "mips",
            20 => "powerpc",
            21 => "powerpc64",
            22 => "s390",
            40 => "arm",
            62 => "x86-64",
            183 => "aarch64",
            243 => "riscv",
            258 => "loongarch",
            other => return format!("machine {other}"),
        };
        let bits = match self.class {
            ElfClass::Elf32 => "32-bit",
            ElfClass::Elf64 => "64-bit",
        };
        format!("{name} ({bits})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_v_is_compatible_with_everything() {
        let linux = Target {
            class: ElfClass::Elf64,
            machine: 62,
            os_abi: 3,
        };
        let sysv = Target { os_abi: 0, ..linux };
        let freebsd = Target { os_abi: 9, ..linux };
        let arm = Target {
            machine: 183,
            ..linux
        };
        let x32 = Target {
            class: ElfClass::Elf32,
            ..linux
        };
        assert!(linux.accepts(&sysv) && sysv.accepts(&linux) && sysv.accepts(&freebsd));
        assert!(!linux.accepts(&freebsd));
        assert!(!linux.accepts(&arm) && !linux.accepts(&x32));
    }
}
