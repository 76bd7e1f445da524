// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title IProviderRegistry
/// @notice What the JobMarket needs from the ProviderRegistry.
interface IProviderRegistry {
    /// @notice Whether `provider` may take jobs: registered, staked at least the minimum, not unstaking.
    function isActive(address provider) external view returns (bool);

    /// @notice Removes up to `amount` of `provider`'s stake, rewarding `beneficiary`; market only.
    /// @return slashed The stake actually removed.
    function slash(address provider, uint256 amount, address beneficiary) external returns (uint256 slashed);
}
